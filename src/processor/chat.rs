//! Chat templates: the checkpoint's Jinja template rendered with minijinja the way transformers renders it.
//!
//! Port of transformers' `utils/chat_template_utils.py` (`_compile_jinja_template`, `render_jinja_template`):
//! a Jinja environment with `trim_blocks=True`, `lstrip_blocks=True`, the `loopcontrols` extension, a `tojson`
//! filter that is Python's `json.dumps(x, ensure_ascii=False, indent=...)` (", " and ": " separators, no HTML
//! escaping), and a `raise_exception(message)` global. Python string methods (`.strip()`, `.startswith()`,
//! `.split()`, ...) come from `minijinja-contrib`'s pycompat. Not provided: `strftime_now` (date-dependent
//! templates such as Llama 3.1's), the `{% generation %}` tag.
//!
//! Sources of the template: `tokenizer_config.json` `chat_template` (a string, or a list of `{name, template}`
//! where `default` is used), `chat_template.json` `{"chat_template": ...}`, or GGUF `tokenizer.chat_template`.
//! Messages follow Hugging Face: `{role, content}` with `content` a string or a list of
//! `{"type": "text", "text": ...}` / `{"type": "image"}` parts.

use minijinja::value::{Kwargs, Value as JValue};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::loader::gguf::Gguf;

/// One part of a multimodal message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ContentPart {
    Text {
        text: String,
    },
    /// An image placeholder; the template writes the model's image marker (e.g. `<image>`).
    Image {},
}

/// A message's content: plain text or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A chat message as Hugging Face templates expect it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

impl Message {
    /// A plain-text message.
    pub fn text(role: &str, text: &str) -> Self {
        Self { role: role.into(), content: Content::Text(text.into()) }
    }

    /// A message of parts, e.g. `[ContentPart::Image {}, ContentPart::Text { .. }]`.
    pub fn parts(role: &str, parts: Vec<ContentPart>) -> Self {
        Self { role: role.into(), content: Content::Parts(parts) }
    }
}

/// A compiled chat template plus the special tokens it may reference (`bos_token`, `eos_token`).
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("source", &self.source).finish()
    }
}

fn tmpl_err(e: minijinja::Error) -> Error {
    Error::Template(crate::error::error_chain(&e))
}

/// A special token as `tokenizer_config.json` writes it: `"<s>"` or `{"content": "<s>", ...}`.
fn token_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

/// Instructions a template may run per render (minijinja's fuel).
pub const TEMPLATE_FUEL: u64 = 50_000_000;

impl ChatTemplate {
    /// Compile a template source.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // templates come from model files: one that loops without end (nested `range`s) stops with an error
        // instead of hanging every request (a long chat with tools takes well under a million instructions)
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_filter("tojson", tojson_filter);
        env.add_template_owned("chat", source.to_string()).map_err(tmpl_err)?;
        Ok(Self { env, source: source.to_string(), bos_token: None, eos_token: None })
    }

    /// Set the special tokens the template can use as `bos_token` / `eos_token`.
    pub fn with_special_tokens(mut self, bos_token: Option<String>, eos_token: Option<String>) -> Self {
        self.bos_token = bos_token;
        self.eos_token = eos_token;
        self
    }

    /// From `tokenizer_config.json` (its `chat_template`, `bos_token`, `eos_token`).
    pub fn from_tokenizer_config(json: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(json).map_err(|e| Error::Template(format!("tokenizer_config.json: {e}")))?;
        let source =
            match v.get("chat_template") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .or_else(|| list.first())
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| Error::Template("tokenizer_config.json: chat_template list has no template".into()))?
                    .to_string(),
                _ => return Err(Error::Template(
                    "tokenizer_config.json has no chat_template; look for chat_template.json or chat_template.jinja"
                        .into(),
                )),
            };
        Ok(Self::new(&source)?.with_special_tokens(token_str(v.get("bos_token")), token_str(v.get("eos_token"))))
    }

    /// From `chat_template.jinja` (the template source, as transformers 5 saves it), with `bos_token` /
    /// `eos_token` from `tokenizer_config.json` when there is one.
    pub fn from_jinja(source: &str, tokenizer_config: Option<&str>) -> Result<Self> {
        let t = Self::new(source)?;
        let Some(cfg) = tokenizer_config else {
            return Ok(t);
        };
        let v: Value = serde_json::from_str(cfg).map_err(|e| Error::Template(format!("tokenizer_config.json: {e}")))?;
        Ok(t.with_special_tokens(token_str(v.get("bos_token")), token_str(v.get("eos_token"))))
    }

    /// From `chat_template.json` (`{"chat_template": "..."}`).
    pub fn from_chat_template_json(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json).map_err(|e| Error::Template(format!("chat_template.json: {e}")))?;
        let s = v
            .get("chat_template")
            .and_then(|s| s.as_str())
            .ok_or_else(|| Error::Template("chat_template.json has no chat_template string".into()))?;
        Self::new(s)
    }

    /// From GGUF metadata `tokenizer.chat_template`; `bos_token` / `eos_token` from the token ids.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let src = gguf
            .get_str("tokenizer.chat_template")
            .map_err(|e| Error::Template(format!("GGUF has no chat template: {e}")))?;
        let tokens = gguf.get_str_array("tokenizer.ggml.tokens").ok();
        let tok = |key: &str| {
            let id = gguf.get_u32(key).ok()? as usize;
            tokens.as_ref()?.get(id).map(|s| s.to_string())
        };
        Ok(Self::new(src)?.with_special_tokens(tok("tokenizer.ggml.bos_token_id"), tok("tokenizer.ggml.eos_token_id")))
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render `messages` (`add_generation_prompt`: end with the assistant's turn header).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, &Value::Null)
    }

    /// Like [`ChatTemplate::render`], with extra template variables (a JSON object, e.g. `{"tools": [...]}`).
    pub fn render_with(&self, messages: &[Message], add_generation_prompt: bool, extra: &Value) -> Result<String> {
        let extra = match extra {
            Value::Object(_) => JValue::from_serialize(extra),
            _ => JValue::from(()),
        };
        // messages keep their key order (role, content, ...) like Python dicts: minijinja's preserve_order
        let ctx = minijinja::context! {
            messages => JValue::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
            ..extra
        };
        let tmpl = self.env.get_template("chat").map_err(tmpl_err)?;
        tmpl.render(ctx).map_err(tmpl_err)
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=sort_keys)`
/// (`separators` is not supported).
fn tojson_filter(value: JValue, kwargs: Kwargs) -> std::result::Result<JValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    py_json(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    if ensure_ascii.unwrap_or(false) {
        // json.dumps(ensure_ascii=True): every non-ASCII char as \uXXXX (UTF-16 surrogate pairs)
        let mut ascii = String::with_capacity(out.len());
        for ch in out.chars() {
            if ch.is_ascii() {
                ascii.push(ch);
            } else {
                let mut buf = [0u16; 2];
                for unit in ch.encode_utf16(&mut buf) {
                    ascii.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        out = ascii;
    }
    Ok(JValue::from_safe_string(out))
}

/// Python `json.dumps` layout: `", "` / `": "` separators inline; with `indent`, one item per line; strings
/// escaped as `ensure_ascii=False` does (only `"`, `\\` and control characters).
fn py_json(
    v: &JValue,
    indent: Option<usize>,
    sort: bool,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = v.as_i64() {
                out.push_str(&i.to_string());
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e16 {
                    out.push_str(&format!("{f:.1}"));
                } else if f.is_finite() {
                    out.push_str(&f.to_string());
                } else {
                    out.push_str(if f.is_nan() {
                        "NaN"
                    } else if f > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    });
                }
            }
        }
        ValueKind::String => out.push_str(&serde_json::to_string(v.as_str().unwrap_or_default()).unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<JValue> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                py_json(x, indent, sort, depth + 1, out)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<JValue> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if sort {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                let ks = k.as_str().map(String::from).unwrap_or_else(|| k.to_string());
                out.push_str(&serde_json::to_string(&ks).unwrap_or_default());
                out.push_str(": ");
                py_json(&v.get_item(k)?, indent, sort, depth + 1, out)?;
            }
            newline(out, depth);
            out.push('}');
        }
        _ => out.push_str(&serde_json::to_string(&v.to_string()).unwrap_or_default()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        let t = ChatTemplate::new("{% for m in messages %}\n  {{ m.role }}:{{ m.content }}\n{% endfor %}").unwrap();
        let s = t.render(&[Message::text("user", "hi"), Message::text("assistant", "yo")], false).unwrap();
        assert_eq!(s, "  user:hi\n  assistant:yo\n");
    }

    #[test]
    fn raise_exception_and_loop_controls() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'system' %}{{ raise_exception('need a system message') }}{% endif %}",
        )
        .unwrap();
        let e = t.render(&[Message::text("user", "x")], false).unwrap_err();
        assert!(e.to_string().contains("need a system message"), "{e}");
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}",
        )
        .unwrap();
        assert_eq!(t.render(&[Message::text("a", "1"), Message::text("b", "2")], false).unwrap(), "1");
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let t = ChatTemplate::new("{{ messages[0] | tojson }}|{{ {'a': [1, 2]} | tojson(indent=2) }}").unwrap();
        let s = t.render(&[Message::text("user", "<é>\"")], false).unwrap();
        assert_eq!(s, "{\"role\": \"user\", \"content\": \"<é>\\\"\"}|{\n  \"a\": [\n    1,\n    2\n  ]\n}");
    }

    #[test]
    fn python_string_methods() {
        let t =
            ChatTemplate::new("{{ messages[0].content.strip().upper() }}{{ messages[0].content.startswith(' a') }}")
                .unwrap();
        assert_eq!(t.render(&[Message::text("user", " ab ")], false).unwrap(), "ABTrue");
        // as Jinja2 prints Python booleans
    }

    #[test]
    fn bad_template_is_an_error() {
        assert!(matches!(ChatTemplate::new("{% for %}"), Err(Error::Template(_))));
    }
}
