//! The interactive shell (`quorumkv shell`): a REPL in the style of cqlsh and redis-cli
//! that shows what a Dynamo-style store does underneath — the sibling ids and causal
//! context of every read, the coordinator's trace of which replicas answered, which were
//! stale and repaired, and which nodes are down.
//!
//! The library part is split by what things are: [`commands`] (the catalogue behind the
//! parser, `help` and completion), [`parse`] (text to typed commands), [`session`] (state
//! and execution against [`crate::client::Client`]), [`render`] (tables and JSON) and
//! [`completion`] (the rustyline helper). The terminal loop lives in `src/cmd/shell.rs`.
//! See `docs/SHELL.md`.

pub mod commands;
pub mod completion;
pub mod parse;
pub mod render;
pub mod session;

pub use parse::{Command, ParseError};
pub use render::Format;
pub use session::{ExecError, Outcome, Session};
