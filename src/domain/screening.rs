//! Sanctions and PEP screening: fuzzy name matching tolerant of diacritics,
//! transliteration and word order.
//!
//! Both the applicant's name and each list entry go through the same normalisation
//! (diacritics stripped, common transliteration variants folded to one spelling,
//! name particles joined to the word they precede), then every token of the list entry
//! must find its own token in the applicant's name. The score is the weakest of those
//! token pairs (Jaro-Winkler), so a shared first name alone never matches, extra middle
//! names do not hide a match, and word order does not matter.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// One entry of a sanctions or PEP list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub name: String,
    /// `SANCTIONS` or `PEP`.
    pub list: String,
    tokens: Vec<String>,
}

impl ListEntry {
    pub fn new(name: impl Into<String>, list: impl Into<String>) -> Self {
        let name = name.into();
        let tokens = tokens(&name);
        ListEntry {
            name,
            list: list.into(),
            tokens,
        }
    }
}

/// A list entry the applicant matched, and how closely (0..1).
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub name: String,
    pub list: String,
    pub score: f64,
}

/// Parses the list's CSV: a header line, then `name,list` per line (`list` is
/// `SANCTIONS` or `PEP`; further columns are ignored). Quoted fields may hold commas.
pub fn parse_list(csv: &str) -> Result<Vec<ListEntry>, String> {
    let mut entries = Vec::new();
    for (number, line) in csv.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv_line(line);
        let name = fields.first().map(|s| s.trim()).unwrap_or_default();
        let list = fields
            .get(1)
            .map(|s| s.trim().to_ascii_uppercase())
            .unwrap_or_default();
        if name.is_empty() || !(list == "SANCTIONS" || list == "PEP") {
            return Err(format!(
                "line {}: expected `name,SANCTIONS|PEP`",
                number + 1
            ));
        }
        entries.push(ListEntry::new(name, list));
    }
    Ok(entries)
}

fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(f) = fields.last_mut() {
                    f.push('"');
                }
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

/// Entries the name matches at or above `threshold`, best first.
pub fn screen(name: &str, list: &[ListEntry], threshold: f64) -> Vec<Hit> {
    let query = tokens(name);
    let mut hits: Vec<Hit> = list
        .iter()
        .filter_map(|entry| {
            let score = similarity(&query, &entry.tokens);
            (score >= threshold).then(|| Hit {
                name: entry.name.clone(),
                list: entry.list.clone(),
                score,
            })
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits
}

/// How well `query` covers every token of `entry`: each entry token is paired with a
/// distinct query token (best first), and the weakest pair is the score.
fn similarity(query: &[String], entry: &[String]) -> f64 {
    if entry.is_empty() || query.len() < entry.len() {
        return 0.0;
    }
    let mut used = vec![false; query.len()];
    let mut weakest = 1.0f64;
    // Longer entry tokens first: they are the most distinctive, so they pick first.
    let mut order: Vec<&String> = entry.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse(t.chars().count()));
    for token in order {
        let best = query
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .map(|(i, q)| (i, strsim::jaro_winkler(token, q)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, score)) => {
                used[i] = true;
                weakest = weakest.min(score);
            }
            None => return 0.0,
        }
    }
    weakest
}

/// Particles that belong to the following word ("al-Rashid", "van der Berg").
const PARTICLES: [&str; 10] = [
    "al", "el", "ul", "bin", "ibn", "van", "von", "der", "de", "abu",
];

/// Given names with many romanisations, folded to one spelling.
const NAME_VARIANTS: [(&str, &str); 12] = [
    ("mohammed", "muhammad"),
    ("mohammad", "muhammad"),
    ("mohamed", "muhammad"),
    ("muhammed", "muhammad"),
    ("mohamad", "muhammad"),
    ("mukhammad", "muhammad"),
    ("yusuf", "josef"),
    ("yosef", "josef"),
    ("joseph", "josef"),
    ("iosif", "josef"),
    ("aleksandr", "aleksander"),
    ("alexandr", "aleksander"),
];

/// The normalised tokens of a name.
pub fn tokens(name: &str) -> Vec<String> {
    let mut plain = String::with_capacity(name.len());
    for c in name.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        match c {
            'ß' => plain.push_str("ss"),
            'æ' | 'Æ' => plain.push_str("ae"),
            'œ' | 'Œ' => plain.push_str("oe"),
            'ø' | 'Ø' => plain.push('o'),
            'ł' | 'Ł' => plain.push('l'),
            'đ' | 'Đ' | 'ð' => plain.push('d'),
            'þ' | 'Þ' => plain.push_str("th"),
            'ı' => plain.push('i'),
            c if c.is_alphanumeric() => plain.extend(c.to_lowercase()),
            _ => plain.push(' '),
        }
    }
    let mut words: Vec<String> = Vec::new();
    let mut pending = String::new();
    for word in plain.split_whitespace() {
        if PARTICLES.contains(&word) {
            pending.push_str(word);
            continue;
        }
        let joined = format!("{pending}{word}");
        pending.clear();
        words.push(fold(&joined));
    }
    if !pending.is_empty() {
        words.push(fold(&pending));
    }
    words
}

/// Folds spellings that transliterations disagree on to one form.
fn fold(word: &str) -> String {
    if let Some((_, canonical)) = NAME_VARIANTS.iter().find(|(v, _)| *v == word) {
        return (*canonical).to_owned();
    }
    let mut s = word.to_owned();
    for (from, to) in [
        ("tsch", "ch"),
        ("sch", "sh"),
        ("tch", "ch"),
        ("zh", "j"),
        ("kh", "h"),
        ("ph", "f"),
        ("dh", "d"),
        ("th", "t"),
        ("ck", "k"),
        ("x", "ks"),
        ("qu", "kv"),
        ("q", "k"),
        ("ue", "u"),
        ("oe", "o"),
        ("ae", "a"),
        ("ou", "u"),
        ("oo", "u"),
        ("ee", "i"),
        ("y", "i"),
        ("w", "v"),
        ("j", "i"),
    ] {
        s = s.replace(from, to);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if out.ends_with(c) {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../config/sanctions_sample.csv");
    const THRESHOLD: f64 = 0.93;

    fn list() -> Vec<ListEntry> {
        parse_list(SAMPLE).expect("the sample list parses")
    }

    #[test]
    fn names_that_must_hit() {
        let list = list();
        let cases = [
            ("Zoltan Vexmoor", "Zoltan Vexmoor"),
            ("VEXMOOR, Zoltan", "Zoltan Vexmoor"),
            ("zoltán véxmoor", "Zoltan Vexmoor"),
            ("Zoltan Vexmor", "Zoltan Vexmoor"),
            ("Zoltan Pieter Vexmoor", "Zoltan Vexmoor"),
            ("Muhammad Al Fictitia", "Mohammed al-Fictitia"),
            ("Mohamed Alfictitia", "Mohammed al-Fictitia"),
            ("Alexander Grimwaldov", "Aleksandr Grimwaldov"),
            ("Grimwaldow Aleksandr", "Aleksandr Grimwaldov"),
            ("Jose Nandubar Ortiz", "José Ñandúbar Ortíz"),
            ("Ortiz Jose Nandubar", "José Ñandúbar Ortíz"),
            ("Juergen Schattenberg", "Jürgen Schattenberg"),
            ("Jurgen Shattenberg", "Jürgen Schattenberg"),
            ("Yusuf Quarrendale", "Joseph Quarrendale"),
            ("Iosif Kvarrendale", "Joseph Quarrendale"),
            ("Søren Blæksmark", "Soren Blaeksmark"),
        ];
        for (query, expected) in cases {
            let hits = screen(query, &list, THRESHOLD);
            assert!(
                hits.iter().any(|h| h.name == expected),
                "`{query}` must match `{expected}`, got {hits:?}"
            );
        }
    }

    #[test]
    fn near_misses_that_must_not_hit() {
        let list = list();
        for query in [
            "Zoltan Smith",
            "Vexmoor",
            "John Vexmoor",
            "Zelda Vexford",
            "Alexandra Grimes",
            "Jose Ortiz",
            "Muhammad Ali",
            "Jurgen Klopp",
            "Joseph Quarry",
            "Soren Kierkegaard",
            "Ada Lovelace",
            "",
        ] {
            let hits = screen(query, &list, THRESHOLD);
            assert!(hits.is_empty(), "`{query}` must not match, got {hits:?}");
        }
    }

    #[test]
    fn the_threshold_is_honoured() {
        let list = list();
        assert!(screen("Zoltan Vexmor", &list, 0.999).is_empty());
        assert!(!screen("Zoltan Vexmoor", &list, 0.999).is_empty());
        assert!(!screen("Zoltan Vexford", &list, 0.85).is_empty());
        assert!(screen("Zoltan Vexford", &list, 0.93).is_empty());
    }

    #[test]
    fn normalisation_folds_spellings() {
        assert_eq!(
            tokens("José  ÑANDÚBAR-Ortíz"),
            vec!["iose", "nandubar", "ortiz"]
        );
        assert_eq!(tokens("van der Berg"), tokens("Vanderberg"));
        assert_eq!(tokens("Müller"), tokens("Mueller"));
        assert_eq!(tokens("Straße"), tokens("Strasse"));
    }

    #[test]
    fn malformed_lists_are_refused() {
        assert!(parse_list("name,list\nSomeone,WATCHLIST\n").is_err());
        assert!(parse_list("name,list\n,PEP\n").is_err());
        let parsed = parse_list("name,list\n\"Doe, Jane\",pep,XX\n# comment\n").expect("ok");
        assert_eq!(parsed[0].name, "Doe, Jane");
        assert_eq!(parsed[0].list, "PEP");
    }
}
