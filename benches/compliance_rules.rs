//! How long the automated compliance checks take on bodies up to the 50 000-character
//! limit, with the shipped rules. They run inside the submit transaction, so their time
//! is time a piece's row stays locked. Run: `cargo bench --bench compliance_rules`.

use std::time::{Duration, Instant};

use tradegraph::domain::compliance_rules::RuleSet;

/// A sentence mix like real commentary: mostly clean, some triggers, some negations,
/// some non-ASCII.
const SENTENCES: [&str; 8] = [
    "Bitcoin traded sideways this week while volumes fell across major venues. ",
    "Returns are not guaranteed and nothing here is risk-free. ",
    "Some say SOL will reach $500 by summer, which we consider speculative. ",
    "The café owner accepts crypto; “can’t lose” claims deserve scepticism. ",
    "Our model portfolio gained 12% last quarter. ",
    "Follow best practices for custody and keep keys offline. ",
    "🚀 Funding rates normalised after the liquidation cascade. ",
    "Regulators continued to consult on stablecoin reserves. ",
];

fn body(chars: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    while out.chars().count() < chars {
        out.push_str(SENTENCES[i % SENTENCES.len()]);
        i += 1;
    }
    out.chars().take(chars).collect()
}

fn main() {
    let rules = RuleSet::from_toml(include_str!("../config/compliance_rules.toml"))
        .expect("the shipped rules load");
    println!("| body (chars) | findings | runs | mean per check | fastest |");
    println!("|---:|---:|---:|---:|---:|");
    for chars in [1_000, 10_000, 50_000] {
        let text = body(chars);
        let findings = rules
            .assess("Weekly view", &text, "MARKET_COMMENTARY", "en")
            .findings
            .len();
        // Warm up, then measure for at least a second.
        for _ in 0..3 {
            std::hint::black_box(rules.assess("Weekly view", &text, "MARKET_COMMENTARY", "en"));
        }
        let mut runs = 0u32;
        let mut fastest = Duration::MAX;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(1) || runs < 5 {
            let one = Instant::now();
            std::hint::black_box(rules.assess("Weekly view", &text, "MARKET_COMMENTARY", "en"));
            fastest = fastest.min(one.elapsed());
            runs += 1;
        }
        let mean = started.elapsed() / runs;
        println!(
            "| {chars} | {findings} | {runs} | {:.3} ms | {:.3} ms |",
            mean.as_secs_f64() * 1e3,
            fastest.as_secs_f64() * 1e3
        );
    }
}
