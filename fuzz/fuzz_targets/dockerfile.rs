//! The Dockerfile parser and word expansion on arbitrary input: they answer (a parse or
//! an error), never panic, and what parses keeps its instructions in line order.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(df) = berth_build::parser::parse(text) {
        let mut last = 0;
        for i in &df.instructions {
            assert!(i.line > last && i.end_line >= i.line);
            last = i.end_line.max(i.line);
            let _ = berth_build::shell::split(&i.text(), &|_: &str| Some("v".to_string()), df.escape);
        }
    }
    let _ = berth_build::shell::expand(text, &|n: &str| (n.len() % 2 == 0).then(|| n.to_string()), '\\');
});
