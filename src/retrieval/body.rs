//! Bounded reads of HTTP response bodies (retrieval answers, the remote generator's completions and error
//! bodies), on both targets: reqwest's `bytes_stream` exists natively and on wasm32 (`Response::chunk` is
//! native-only), so the body is read piece by piece and reading stops once it is over the limit, instead of
//! buffering whatever a broken or hostile server sends.

use futures_util::StreamExt;

/// How much of an error (non-2xx) body is read: enough for any `{"error":…}` message.
pub(crate) const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// A body read up to a limit.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LimitedBody {
    /// The body, or its first `limit` bytes when it was longer.
    pub bytes: Vec<u8>,
    /// The body was longer than the limit (reading stopped there).
    pub over_limit: bool,
}

/// Reads `resp`'s body, at most `limit` bytes of it; a body that announces or turns out to be longer stops being
/// read after the first `limit` bytes and comes back with `over_limit` set.
pub(crate) async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<LimitedBody, reqwest::Error> {
    let announced = resp.content_length();
    let mut bytes = Vec::with_capacity(announced.map_or(0, |n| n.min(limit as u64) as usize).min(64 * 1024));
    let mut stream = resp.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        let room = limit - bytes.len();
        if piece.len() > room {
            bytes.extend_from_slice(&piece[..room]);
            return Ok(LimitedBody { bytes, over_limit: true });
        }
        bytes.extend_from_slice(&piece);
    }
    Ok(LimitedBody { bytes, over_limit: false })
}
