//! A fuzz harness for the component load path: arbitrary bytes, and real
//! components with bytes flipped, cut, or inserted, go through
//! `Runtime::load_blocking` (header and size checks, compile, world and
//! export checks, `describe`). Every input must end in `Ok` or a `LoadError`
//! — never a panic, an abort, or a hang — and a component that loads must
//! describe itself sensibly.
//!
//! CI runs a few dozen cases; `PROPTEST_CASES=5000 cargo test -p
//! sundial-host --test all fuzz_load` runs it for minutes.

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use sundial::clock::{Clock, SystemClock};
use sundial::runtime::Runtime;

use crate::helpers::wasm;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(Arc::new(SystemClock) as Arc<dyn Clock>).unwrap())
}

fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        ["cleanup", "faulty", "missing-export", "extra-import"]
            .iter()
            .map(|n| std::fs::read(wasm(n)).unwrap())
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, xor: u8 },
    Cut { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
}

fn mutated(seed: usize, edits: &[Edit]) -> Vec<u8> {
    let mut b = seeds()[seed % seeds().len()].clone();
    for e in edits {
        if b.is_empty() {
            break;
        }
        match e {
            Edit::Flip { at, xor } => {
                let i = at % b.len();
                b[i] ^= xor.max(&1);
            }
            Edit::Cut { at } => b.truncate(at % b.len()),
            Edit::Insert { at, bytes } => {
                let i = at % b.len();
                b.splice(i..i, bytes.iter().copied());
            }
        }
    }
    b
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>()).prop_map(|(at, xor)| Edit::Flip { at, xor }),
        1 => any::<usize>().prop_map(|at| Edit::Cut { at }),
        2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
    ]
}

/// Loads `bytes`; a loaded component must describe itself sensibly.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match runtime().load_blocking(bytes) {
        Ok(v) => {
            prop_assert!(!v.info.name.is_empty() && v.info.name.len() <= 64, "{:?}", v.info);
            prop_assert_eq!(v.size, bytes.len());
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(!message.is_empty());
            prop_assert!(!message.contains("worker"), "the loader lost a worker: {message}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_crash_the_loader(
        header in prop_oneof![Just(Vec::new()), Just(b"\0asm\x0d\0\x01\0".to_vec()), Just(b"\0asm\x01\0\0\0".to_vec())],
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = header;
        bytes.extend(body);
        check(&bytes)?;
    }

    #[test]
    fn mutated_components_never_crash_the_loader(
        seed in 0usize..4,
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        check(&mutated(seed, &edits))?;
    }
}
