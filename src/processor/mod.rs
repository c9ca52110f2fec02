//! Everything between user input and the model's inputs, on the CPU: image decoding and preprocessing
//! (Pillow-exact resampling), the Idefics3 image-token expansion, the tokenizer (`tokenizers` crate, also built
//! from GGUF metadata) and chat templates (minijinja).

pub mod chat;
pub mod image;
pub mod prompt;
pub mod resize;
pub mod tokenizer;
