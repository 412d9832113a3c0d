//! The corpus, the runners and the mutations every target shares.

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{
    Config as RunnerConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};

/// Every seed of `tests/corpus/<target>/`, by file name, sorted.
pub(crate) fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

pub(crate) fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target)
}

/// One seed of `tests/corpus/<target>/`.
pub(crate) fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = corpus_dir(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The seeds of `target`, then `long`: the target's long inputs, made by
/// its module rather than committed.
pub(crate) fn inputs(target: &str, long: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let mut all = corpus(target);
    all.extend(long);
    all
}

/// A long input, named `long:<name>` in failure lists.
pub(crate) fn long(name: &str, bytes: impl Into<Vec<u8>>) -> (String, Vec<u8>) {
    (format!("long:{name}"), bytes.into())
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".to_string())
}

/// Runs `case` twice on every input: a panic, a broken invariant (`Err`)
/// or two different observations fail the test, which lists them all.
pub(crate) fn run_corpus<I, O: PartialEq + Debug>(
    target: &str,
    inputs: Vec<(String, I)>,
    case: impl Fn(&I) -> Result<O, String>,
) {
    let mut failures = Vec::new();
    for (name, input) in &inputs {
        let once = || catch_unwind(AssertUnwindSafe(|| case(input)));
        match (once(), once()) {
            (Err(panic), _) | (_, Err(panic)) => {
                failures.push(format!("{name}: panicked: {}", panic_text(&*panic)));
            }
            (Ok(Err(broken)), _) | (_, Ok(Err(broken))) => {
                failures.push(format!("{name}: {broken}"));
            }
            (Ok(Ok(first)), Ok(Ok(second))) if first != second => {
                failures.push(format!(
                    "{name}: not deterministic: {first:?} then {second:?}"
                ));
            }
            _ => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs failed:\n{}",
        failures.len(),
        inputs.len(),
        failures.join("\n")
    );
}

/// Runs `cases` proptest cases of `strategy` with a fixed seed.
pub(crate) fn run_fuzz<O>(
    target: &str,
    cases: u32,
    strategy: impl Strategy<Value = Vec<u8>>,
    case: impl Fn(&[u8]) -> Result<O, String>,
) {
    let config = RunnerConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 512,
        ..RunnerConfig::default()
    };
    let mut runner = TestRunner::new_with_rng(config, rng(target));
    let result = runner.run(&strategy, |input| {
        case(&input)
            .map(|_| ())
            .map_err(|broken| TestCaseError::fail(format!("{broken}\ninput: {}", shown(&input))))
    });
    if let Err(error) = result {
        panic!(
            "{target}: {error}\nreproduce: cargo test --test parsers {target}_fuzz \
             (save the input as a seed in tests/corpus/{target}/)"
        );
    }
}

/// A fixed RNG per target; `PARSERS_SEED` picks another.
fn rng(target: &str) -> TestRng {
    let mut seed = [0x5a_u8; 32];
    for (i, b) in target.bytes().enumerate() {
        seed[i % 24] ^= b;
    }
    let extra: u64 = std::env::var("PARSERS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    seed[24..].copy_from_slice(&extra.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &seed)
}

/// Bytes as a Rust byte string, for failure messages.
pub(crate) fn shown(input: &[u8]) -> String {
    let text: String = input
        .iter()
        .take(600)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("b\"{text}\" ({} bytes)", input.len())
}

/// One change to a seed.
#[derive(Clone, Debug)]
enum Edit {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    Repeat(Index, usize, usize),
}

fn apply(mut input: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = input.len();
        match edit {
            Edit::Flip(at, bit) if len > 0 => input[at.index(len)] ^= 1 << bit,
            Edit::Insert(at, piece) => {
                let at = at.index(len + 1);
                input.splice(at..at, piece.iter().copied());
            }
            Edit::Delete(at, n) if len > 0 => {
                let at = at.index(len);
                input.drain(at..(at + n).min(len));
            }
            Edit::Truncate(at) => input.truncate(at.index(len + 1)),
            Edit::Repeat(at, n, times) if len > 0 => {
                let at = at.index(len);
                let chunk = input[at..(at + n).min(len)].to_vec();
                for _ in 0..*times {
                    input.splice(at..at, chunk.iter().copied());
                }
            }
            _ => {}
        }
    }
    input
}

/// Seeds of `target` changed by one to four edits (most cases), inputs of
/// the target's own shape (`shaped`), pieces of `dict` strung together, or
/// random bytes.
pub(crate) fn mutated(
    target: &str,
    dict: &'static [&'static str],
    shaped: BoxedStrategy<Vec<u8>>,
) -> BoxedStrategy<Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, seed)| seed).collect();
    let piece = prop_oneof![
        5 => select(dict).prop_map(|s| s.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 1..4),
    ];
    // Mostly bits that keep ASCII ASCII: the top bit makes bad UTF-8.
    let bit = prop_oneof![4 => 0u8..7, 1 => Just(7u8)];
    let edit = prop_oneof![
        (any::<Index>(), bit).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (any::<Index>(), piece.clone()).prop_map(|(at, p)| Edit::Insert(at, p)),
        (any::<Index>(), 1usize..8).prop_map(|(at, n)| Edit::Delete(at, n)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1usize..16, 1usize..4).prop_map(|(at, n, t)| Edit::Repeat(at, n, t)),
    ];
    prop_oneof![
        4 => (select(seeds), vec(edit, 1..5)).prop_map(|(seed, edits)| apply(seed, &edits)),
        4 => shaped,
        1 => vec(piece, 0..24).prop_map(|pieces| pieces.concat()),
        1 => vec(any::<u8>(), 0..128),
    ]
    .boxed()
}

/// `prefix`, then up to `n` pieces of `dict`.
pub(crate) fn strung(
    prefix: &'static str,
    dict: &'static [&'static str],
    n: usize,
) -> BoxedStrategy<Vec<u8>> {
    vec(select(dict), 0..n)
        .prop_map(move |pieces| format!("{prefix}{}", pieces.concat()).into_bytes())
        .boxed()
}

/// A JSON object of up to `n` members from `members` (written whole, so
/// keys may repeat).
pub(crate) fn object(members: &'static [&'static str], n: usize) -> BoxedStrategy<Vec<u8>> {
    vec(select(members), 0..n)
        .prop_map(|members| format!("{{{}}}", members.join(",")).into_bytes())
        .boxed()
}

/// `Err(what())` unless `ok`: a broken invariant.
pub(crate) fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// Pieces of JSON, for every body target.
pub(crate) const JSON_DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\"session_id\"",
    "\"session_id\":\"s\"",
    "\"prompt\"",
    "\"name\"",
    "\"role\"",
    "\"read\"",
    "\"admin\"",
    "\"grace_secs\"",
    "\"rate\"",
    "\"30/min\"",
    "\"1/999999h\"",
    "\"1/8760h\"",
    "\"expires\"",
    "\"30d\"",
    "\"36501d\"",
    "\"agents\"",
    "\"*\"",
    "\"budget_usd\"",
    "\"20/month\"",
    "null",
    "true",
    "-0",
    "1e999",
    "18446744073709551616",
    "9223372036854775807",
    "\\u0000",
    "\\ud800",
    "\u{FEFF}",
    "\0",
    " ",
    "\n",
];
