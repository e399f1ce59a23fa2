//! Robustness of the readers: arbitrary (mostly malformed) input must give
//! a history or an error carrying a plausible line number, never a panic.

use jepsen_like::check::{check, CheckOptions};
use jepsen_like::{Format, ModelKind};
use proptest::prelude::*;

/// EDN-flavoured noise: the tokens real histories are made of, shuffled.
fn ednish() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        "#{",
        "#_",
        "#inst",
        "\"",
        "\\",
        "\\a",
        ":type",
        ":invoke",
        ":ok",
        ":info",
        ":fail",
        ":f",
        ":read",
        ":write",
        ":cas",
        ":value",
        ":process",
        ":nemesis",
        ":time",
        "nil",
        "1",
        "-2",
        "3N",
        "1.5",
        "[1 2]",
        "[:k 1]",
        ";c\n",
        "\n",
        " ",
        ",",
        "##Inf",
        "é",
        "\"s\\u00e9\"",
        ":",
        "#",
    ]);
    prop::collection::vec(tokens, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Goal: the EDN reader and the checker never panic on token soup, and
    /// errors point at a line that exists.
    #[test]
    fn edn_never_panics(text in ednish()) {
        match Format::Edn.parse(&text) {
            Ok(h) => {
                for model in [ModelKind::CasRegister, ModelKind::MultiRegister, ModelKind::Set, ModelKind::Counter, ModelKind::SiblingRegister] {
                    let _ = check(&h, &CheckOptions::new(model));
                }
            }
            Err(e) => prop_assert!(e.line() >= 1 && e.line() <= text.lines().count().max(1) + 1, "{} for {:?}", e, text),
        }
    }

    /// Goal: arbitrary bytes-as-text never panic either reader.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        let _ = Format::Edn.parse(&text);
        let _ = Format::Jsonl.parse(&text);
    }
}
