//! Timers for both targets, without tokio on wasm32: [`sleep`] is `tokio::time::sleep` natively and a
//! `setTimeout`-resolved `Promise` in the browser (window or worker: it calls the global scope's `setTimeout`),
//! and [`timeout`] races a future against it with one `poll_fn`; [`or_cancelled`] races one against a
//! [`CancelToken`], looked at every [`CANCEL_POLL_MS`].
//!
//! A timer only fires while the raced future is pending. Work that blocks the thread (a native GPU readback)
//! cannot be interrupted this way; the pipeline also gives such steps a deadline they check between tokens.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use crate::error::{Error, Result};
use crate::generation::CancelToken;

/// Completes after `ms` milliseconds.
pub async fn sleep(ms: u64) {
    #[cfg(not(target_arch = "wasm32"))]
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let global = js_sys::global();
        let set_timeout = js_sys::Reflect::get(&global, &"setTimeout".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        let Some(set_timeout) = set_timeout else {
            return; // no timer in this scope: do not wait rather than never wake
        };
        let ms = ms.min(i32::MAX as u64) as f64;
        let promise = js_sys::Promise::new(&mut |resolve, _reject| {
            let _ = set_timeout.call2(&global, &resolve, &wasm_bindgen::JsValue::from_f64(ms));
        });
        let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    }
}

/// `fut`'s output, or [`Error::Timeout`] naming `step` if `ms` milliseconds pass first.
pub async fn timeout<T>(step: &str, ms: u64, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let mut fut = pin!(fut);
    let mut timer = pin!(sleep(ms));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Error::Timeout { step: step.to_string(), ms }));
        }
        Poll::Pending
    })
    .await
}

/// How often [`or_cancelled`] looks at its [`CancelToken`] (the token is a plain flag, with nothing to wake on).
pub const CANCEL_POLL_MS: u64 = 50;

/// `fut`'s output, or [`Error::Cancelled`] within about [`CANCEL_POLL_MS`] of `cancel` being set, dropping `fut`
/// (an HTTP request or response read then stops). Like [`timeout`], this only helps while `fut` is pending.
pub async fn or_cancelled<T>(cancel: &CancelToken, fut: impl Future<Output = Result<T>>) -> Result<T> {
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let mut fut = pin!(fut);
    let mut watch = pin!(async {
        while !cancel.is_cancelled() {
            sleep(CANCEL_POLL_MS).await;
        }
    });
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        if watch.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Error::Cancelled));
        }
        Poll::Pending
    })
    .await
}
