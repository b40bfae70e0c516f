//! Stage 1 and 2 of the content compliance check: automated rules kept as data, and
//! the risk score computed from what they find. Pure: no I/O, no clock.
//!
//! The rules live in a TOML file (`config/compliance_rules.toml`, see the README) so
//! compliance staff can change wording lists without a release. A rule is either
//!
//! * `kind = "flag"`: every occurrence of one of its `phrases` (or a match of one of its
//!   regex `patterns`) is a finding, unless the text also contains one of the rule's
//!   `satisfied_by` phrases (a disclaimer that makes the claim acceptable), the
//!   occurrence lies inside one of its `exceptions` ("best practice" for "best"), or the
//!   rule says `ignore_negated` / `ignore_quoted` and the occurrence is negated
//!   ("returns are *not* guaranteed") or quoted ("beware of promises of \"guaranteed
//!   returns\"").
//! * `kind = "require"`: the body must contain one of `satisfied_by`; if it does not,
//!   one finding with an empty span at the end of the body (where the missing text
//!   belongs).
//!
//! Matching is case-insensitive and whitespace-insensitive: the text is lower-cased,
//! runs of whitespace become one space, and typographic quotes, apostrophes and hyphens
//! become their ASCII forms, both in the text and in the phrases. Phrases match whole
//! words only ("best" does not match "bestow"). Patterns run on that normalised text.
//!
//! **Spans** (`start`, `end`) are offsets into the original, unnormalised field in
//! **UTF-16 code units**, end exclusive: exactly what JavaScript's
//! `text.slice(start, end)` needs to highlight the finding. For ASCII text they equal
//! character offsets.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Worth a look; does not hold anything up.
    Info,
    /// A human reviewer must judge it.
    Warning,
    /// The piece is AUTO_REJECTED.
    Blocking,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warning => "WARNING",
            Severity::Blocking => "BLOCKING",
        }
    }
}

/// Which field of the piece a finding is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Field {
    Title,
    Body,
}

/// One problem found in a piece of content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's id, e.g. `guarantee-language`.
    pub rule: String,
    pub severity: Severity,
    pub message: String,
    pub field: Field,
    /// UTF-16 code unit offset where the finding starts (inclusive).
    pub start: u32,
    /// UTF-16 code unit offset where it ends (exclusive); equal to `start` for
    /// something missing.
    pub end: u32,
}

/// What the automated stages say about one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    pub findings: Vec<Finding>,
    /// 0 to 100.
    pub risk_score: u8,
    /// Some finding is BLOCKING: the piece is AUTO_REJECTED.
    pub blocked: bool,
    /// The score reaches the rule set's senior-review threshold.
    pub senior_review_required: bool,
}

/// The rules file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    /// A risk score at or above this flags the piece for senior review.
    senior_review_threshold: u8,
    /// Risk added by a topic not listed in `topics`.
    #[serde(default)]
    default_topic_weight: u8,
    /// Risk added by the piece's topic (upper-case topic names).
    #[serde(default)]
    topics: BTreeMap<String, u8>,
    /// Words that negate a phrase when they come shortly before it in the same clause.
    #[serde(default)]
    negations: Vec<String>,
    /// How many words before a phrase are searched for a negation.
    #[serde(default = "default_negation_window")]
    negation_window: usize,
    #[serde(rename = "rule", default)]
    rules: Vec<RuleSpec>,
}

fn default_negation_window() -> usize {
    4
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    #[default]
    Flag,
    Require,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    #[serde(default)]
    kind: RuleKind,
    severity: Severity,
    weight: u8,
    message: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    phrases: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    exceptions: Vec<String>,
    #[serde(default)]
    satisfied_by: Vec<String>,
    #[serde(default)]
    ignore_negated: bool,
    #[serde(default)]
    ignore_quoted: bool,
    /// Primary language subtags the rule applies to (`en`); empty means all.
    #[serde(default)]
    languages: Vec<String>,
}

/// A rule ready to run, and what the ADMIN listing shows of it.
#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub kind: RuleKind,
    pub severity: Severity,
    pub weight: u8,
    pub message: String,
    pub description: String,
    pub phrases: Vec<String>,
    pub patterns: Vec<String>,
    pub exceptions: Vec<String>,
    pub satisfied_by: Vec<String>,
    pub ignore_negated: bool,
    pub ignore_quoted: bool,
    pub languages: Vec<String>,
    compiled_phrases: Vec<String>,
    compiled_patterns: Vec<Regex>,
    compiled_exceptions: Vec<String>,
    compiled_satisfied_by: Vec<String>,
}

/// A loaded, validated rule set.
#[derive(Clone, Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub senior_review_threshold: u8,
    pub default_topic_weight: u8,
    pub topics: BTreeMap<String, u8>,
    /// SHA-256 (hex) of the file's text: which rules checked a version.
    pub fingerprint: String,
    negations: Vec<String>,
    negation_window: usize,
}

/// Why a rules file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesError(pub String);

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RulesError {}

impl RuleSet {
    /// Parses and validates a rules file; nothing half-valid is ever used.
    pub fn from_toml(text: &str) -> Result<RuleSet, RulesError> {
        let file: RuleFile =
            toml::from_str(text).map_err(|e| RulesError(format!("invalid rules file: {e}")))?;
        if file.senior_review_threshold > 100 {
            return Err(RulesError(
                "senior_review_threshold must be between 0 and 100".into(),
            ));
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        let mut seen = std::collections::HashSet::new();
        for spec in file.rules {
            if !seen.insert(spec.id.clone()) {
                return Err(RulesError(format!("rule `{}` is defined twice", spec.id)));
            }
            rules.push(compile(spec)?);
        }
        Ok(RuleSet {
            rules,
            senior_review_threshold: file.senior_review_threshold,
            default_topic_weight: file.default_topic_weight.min(100),
            topics: file
                .topics
                .into_iter()
                .map(|(k, v)| (k.to_uppercase(), v.min(100)))
                .collect(),
            fingerprint: hex::encode(Sha256::digest(text.as_bytes())),
            negations: file.negations.iter().map(|n| normalize(n).text).collect(),
            negation_window: file.negation_window,
        })
    }

    /// The risk a topic adds on its own.
    pub fn topic_weight(&self, topic: &str) -> u8 {
        self.topics
            .get(&topic.to_uppercase())
            .copied()
            .unwrap_or(self.default_topic_weight)
    }

    /// Runs every rule over a piece and scores it.
    pub fn assess(&self, title: &str, body: &str, topic: &str, language: &str) -> Assessment {
        let title_text = normalize(title);
        let body_text = normalize(body);
        let body_len = utf16_len(body);
        let primary = language
            .split(['-', '_'])
            .next()
            .unwrap_or_default()
            .to_lowercase();
        let mut findings = Vec::new();
        for rule in &self.rules {
            if !rule.languages.is_empty() && !rule.languages.contains(&primary) {
                continue;
            }
            let satisfied = rule
                .compiled_satisfied_by
                .iter()
                .any(|p| !find_phrase(&body_text.text, p).is_empty());
            match rule.kind {
                RuleKind::Require => {
                    if !satisfied {
                        findings.push(rule.finding(Field::Body, body_len, body_len));
                    }
                }
                RuleKind::Flag if satisfied => {}
                RuleKind::Flag => {
                    for (field, text) in [(Field::Title, &title_text), (Field::Body, &body_text)] {
                        for (start, end) in self.flag_matches(rule, text) {
                            let (s, e) = text.source_span(start, end);
                            findings.push(rule.finding(field, s, e));
                        }
                    }
                }
            }
        }
        findings.sort_by(|a, b| {
            (a.field != Field::Title, a.start, a.end, &a.rule).cmp(&(
                b.field != Field::Title,
                b.start,
                b.end,
                &b.rule,
            ))
        });
        let risk_score = self.score(&findings, topic);
        Assessment {
            blocked: findings.iter().any(|f| f.severity == Severity::Blocking),
            senior_review_required: risk_score >= self.senior_review_threshold,
            findings,
            risk_score,
        }
    }

    /// The topic's weight, plus for each rule that found something its weight once and
    /// a quarter of it for every further finding (repeating one problem adds less risk
    /// than a new kind of problem), capped at 100.
    pub fn score(&self, findings: &[Finding], topic: &str) -> u8 {
        let mut per_rule: BTreeMap<&str, u32> = BTreeMap::new();
        for finding in findings {
            *per_rule.entry(finding.rule.as_str()).or_default() += 1;
        }
        let mut total = u32::from(self.topic_weight(topic));
        for (id, count) in per_rule {
            let weight = self
                .rules
                .iter()
                .find(|r| r.id == id)
                .map_or(0, |r| u32::from(r.weight));
            total += weight + (count - 1) * weight / 4;
        }
        total.min(100) as u8
    }

    /// Byte ranges in `text.text` where a flag rule fires.
    fn flag_matches(&self, rule: &Rule, text: &Normalized) -> Vec<(usize, usize)> {
        let haystack = text.text.as_str();
        let mut hits: Vec<(usize, usize)> = rule
            .compiled_phrases
            .iter()
            .flat_map(|p| find_phrase(haystack, p))
            .chain(
                rule.compiled_patterns
                    .iter()
                    .flat_map(|re| re.find_iter(haystack).map(|m| (m.start(), m.end())))
                    .filter(|(s, e)| s < e),
            )
            .collect();
        let exceptions: Vec<(usize, usize)> = rule
            .compiled_exceptions
            .iter()
            .flat_map(|p| find_phrase(haystack, p))
            .collect();
        hits.retain(|&(s, e)| !exceptions.iter().any(|&(xs, xe)| xs <= s && e <= xe));
        if rule.ignore_negated {
            hits.retain(|&(s, _)| !self.is_negated(haystack, s));
        }
        if rule.ignore_quoted {
            let quotes: Vec<usize> = haystack.match_indices('"').map(|(i, _)| i).collect();
            hits.retain(|&(s, e)| !is_quoted(&quotes, s, e));
        }
        // Overlapping hits ("guaranteed" inside "guaranteed returns") are one finding:
        // the earliest, and of those the longest.
        hits.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut kept: Vec<(usize, usize)> = Vec::with_capacity(hits.len());
        for hit in hits {
            match kept.last() {
                Some(&(_, last_end)) if hit.0 < last_end => {}
                _ => kept.push(hit),
            }
        }
        kept
    }

    /// Whether a negation word comes within the window before `start`, in the same
    /// clause.
    fn is_negated(&self, text: &str, start: usize) -> bool {
        let before = &text[..start];
        let clause_start = before
            .rfind(['.', '!', '?', ';', ':', ',', '(', ')', '"'])
            .map_or(0, |i| i + 1);
        before[clause_start..]
            .split(|c: char| !(c.is_alphanumeric() || c == '\''))
            .filter(|w| !w.is_empty())
            .rev()
            .take(self.negation_window)
            .any(|word| self.negations.iter().any(|n| n == word))
    }
}

impl Rule {
    fn finding(&self, field: Field, start: u32, end: u32) -> Finding {
        Finding {
            rule: self.id.clone(),
            severity: self.severity,
            message: self.message.clone(),
            field,
            start,
            end,
        }
    }
}

fn compile(spec: RuleSpec) -> Result<Rule, RulesError> {
    let id = spec.id.clone();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(RulesError(format!(
            "rule id `{id}` must be lower-case letters, digits and dashes"
        )));
    }
    if spec.weight > 100 {
        return Err(RulesError(format!("rule `{id}`: weight must be 0 to 100")));
    }
    let phrases = |list: &[String], what: &str| -> Result<Vec<String>, RulesError> {
        list.iter()
            .map(|p| {
                let n = normalize(p).text;
                if n.trim().is_empty() {
                    Err(RulesError(format!("rule `{id}`: an empty {what}")))
                } else {
                    Ok(n.trim().to_owned())
                }
            })
            .collect()
    };
    let compiled_phrases = phrases(&spec.phrases, "phrase")?;
    let compiled_exceptions = phrases(&spec.exceptions, "exception")?;
    let compiled_satisfied_by = phrases(&spec.satisfied_by, "satisfied_by phrase")?;
    let compiled_patterns = spec
        .patterns
        .iter()
        .map(|p| {
            regex::RegexBuilder::new(p)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| RulesError(format!("rule `{id}`: invalid pattern `{p}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    match spec.kind {
        RuleKind::Flag if compiled_phrases.is_empty() && compiled_patterns.is_empty() => {
            return Err(RulesError(format!(
                "rule `{id}`: a flag rule needs phrases or patterns"
            )))
        }
        RuleKind::Require if compiled_satisfied_by.is_empty() => {
            return Err(RulesError(format!(
                "rule `{id}`: a require rule needs satisfied_by phrases"
            )))
        }
        _ => {}
    }
    Ok(Rule {
        id: spec.id,
        kind: spec.kind,
        severity: spec.severity,
        weight: spec.weight,
        message: spec.message,
        description: spec.description,
        languages: spec.languages.iter().map(|l| l.to_lowercase()).collect(),
        phrases: spec.phrases,
        patterns: spec.patterns,
        exceptions: spec.exceptions,
        satisfied_by: spec.satisfied_by,
        ignore_negated: spec.ignore_negated,
        ignore_quoted: spec.ignore_quoted,
        compiled_phrases,
        compiled_patterns,
        compiled_exceptions,
        compiled_satisfied_by,
    })
}

/// Text prepared for matching, remembering where each byte came from.
#[derive(Debug)]
struct Normalized {
    text: String,
    /// For each byte of `text`: the UTF-16 span of the source character it came from.
    origin: Vec<(u32, u32)>,
}

impl Normalized {
    /// The source span (UTF-16) of the normalised bytes `start..end`.
    fn source_span(&self, start: usize, end: usize) -> (u32, u32) {
        let from = self.origin.get(start).map_or(0, |o| o.0);
        let to = end
            .checked_sub(1)
            .and_then(|last| self.origin.get(last))
            .map_or(from, |o| o.1);
        (from, to)
    }

    fn push(&mut self, c: char, source: (u32, u32)) {
        self.text.push(c);
        for _ in 0..c.len_utf8() {
            self.origin.push(source);
        }
    }
}

fn normalize(source: &str) -> Normalized {
    let mut out = Normalized {
        text: String::with_capacity(source.len()),
        origin: Vec::with_capacity(source.len()),
    };
    let mut offset: u32 = 0;
    for c in source.chars() {
        let width = c.len_utf16() as u32;
        let span = (offset, offset + width);
        offset += width;
        if c.is_whitespace() {
            if !out.text.is_empty() && !out.text.ends_with(' ') {
                out.push(' ', span);
            }
            continue;
        }
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{02BC}' | '\u{2032}' => out.push('\'', span),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}'
            | '\u{00BB}' => out.push('"', span),
            '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2212}' => {
                out.push('-', span)
            }
            _ => {
                for lower in c.to_lowercase() {
                    out.push(lower, span);
                }
            }
        }
    }
    out
}

fn utf16_len(text: &str) -> u32 {
    text.encode_utf16().count() as u32
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every whole-word occurrence of `phrase` in `text` (both normalised), as byte ranges.
fn find_phrase(text: &str, phrase: &str) -> Vec<(usize, usize)> {
    let mut hits = Vec::new();
    if phrase.is_empty() {
        return hits;
    }
    let starts_word = phrase.chars().next().is_some_and(is_word_char);
    let ends_word = phrase.chars().next_back().is_some_and(is_word_char);
    for (start, _) in text.match_indices(phrase) {
        let end = start + phrase.len();
        let before_ok =
            !starts_word || !text[..start].chars().next_back().is_some_and(is_word_char);
        let after_ok = !ends_word || !text[end..].chars().next().is_some_and(is_word_char);
        if before_ok && after_ok {
            hits.push((start, end));
        }
    }
    hits
}

/// Whether `start..end` lies between double quotes: an odd number of quotes before it
/// and at least one after it. `quotes` holds the quotes' positions, in order.
fn is_quoted(quotes: &[usize], start: usize, end: usize) -> bool {
    let before = quotes.partition_point(|&q| q < start);
    before % 2 == 1 && quotes.last().is_some_and(|&q| q >= end)
}

/// The SHA-256 (hex) of a version's exact text, canonically encoded: a format tag, then
/// title, body, topic and language, each as its UTF-8 byte length (8 bytes, big endian)
/// followed by its bytes. Length prefixes make the encoding unambiguous, so no two
/// different versions share an encoding ("ab" + "c" is not "a" + "bc").
pub fn content_hash(title: &str, body: &str, topic: &str, language: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tradegraph.content.v1\n");
    for field in [title, body, topic, language] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rules shipped with the server.
    fn shipped() -> RuleSet {
        RuleSet::from_toml(include_str!("../../config/compliance_rules.toml"))
            .expect("the shipped rules load")
    }

    fn small(rules: &str) -> RuleSet {
        let text = format!(
            "senior_review_threshold = 50\nnegations = [\"not\", \"no\", \"never\", \"isn't\"]\n{rules}"
        );
        RuleSet::from_toml(&text).expect("test rules load")
    }

    fn utf16_slice(text: &str, start: u32, end: u32) -> String {
        let units: Vec<u16> = text.encode_utf16().collect();
        String::from_utf16_lossy(&units[start as usize..end as usize])
    }

    fn spans(set: &RuleSet, body: &str) -> Vec<(String, String)> {
        set.assess("", body, "GENERAL", "en")
            .findings
            .into_iter()
            .filter(|f| f.start != f.end)
            .map(|f| (f.rule.clone(), utf16_slice(body, f.start, f.end)))
            .collect()
    }

    const GUARANTEE: &str = r#"
        [[rule]]
        id = "guarantee"
        severity = "BLOCKING"
        weight = 40
        message = "promissory language"
        phrases = ["guaranteed returns", "guaranteed", "risk-free", "can't lose"]
        ignore_negated = true
        ignore_quoted = true
    "#;

    #[test]
    fn matching_ignores_case_and_whitespace() {
        let set = small(GUARANTEE);
        let body = "These are GUARANTEED\n\t  Returns, and it is Risk-Free.";
        assert_eq!(
            spans(&set, body),
            vec![
                ("guarantee".into(), "GUARANTEED\n\t  Returns".into()),
                ("guarantee".into(), "Risk-Free".into()),
            ]
        );
    }

    #[test]
    fn typographic_apostrophes_and_hyphens_match_ascii_phrases() {
        let set = small(GUARANTEE);
        assert_eq!(
            spans(&set, "You can\u{2019}t lose; it is risk\u{2011}free"),
            vec![
                ("guarantee".into(), "can\u{2019}t lose".into()),
                ("guarantee".into(), "risk\u{2011}free".into()),
            ]
        );
    }

    #[test]
    fn negated_and_quoted_phrases_do_not_trip() {
        let set = small(GUARANTEE);
        assert!(spans(&set, "Returns are not guaranteed.").is_empty());
        assert!(spans(&set, "No investment is ever risk-free.").is_empty());
        assert!(spans(&set, "Beware of \"guaranteed returns\" offers.").is_empty());
        assert!(spans(&set, "Beware of \u{201C}guaranteed returns\u{201D}.").is_empty());
        // A negation in an earlier clause does not cover a later one.
        assert_eq!(
            spans(&set, "This is not advice, returns are guaranteed").len(),
            1
        );
        // Beyond the window of four words, a negation no longer counts.
        assert_eq!(
            spans(&set, "I do not say this lightly but profits guaranteed").len(),
            1
        );
    }

    #[test]
    fn a_rule_without_the_flags_trips_on_negations_and_quotes() {
        let set = small(
            r#"
            [[rule]]
            id = "strict"
            severity = "WARNING"
            weight = 5
            message = "m"
            phrases = ["guaranteed"]
        "#,
        );
        assert_eq!(spans(&set, "not \"guaranteed\"").len(), 1);
    }

    #[test]
    fn phrases_match_whole_words_only() {
        let set = small(
            r#"
            [[rule]]
            id = "superlative"
            severity = "WARNING"
            weight = 10
            message = "m"
            phrases = ["best"]
            exceptions = ["best practice", "at best"]
        "#,
        );
        assert!(spans(&set, "He will bestow the bestseller award.").is_empty());
        assert!(spans(&set, "Follow best practice; it is mediocre at best.").is_empty());
        assert_eq!(
            spans(&set, "The best coin (best!)"),
            vec![
                ("superlative".into(), "best".into()),
                ("superlative".into(), "best".into()),
            ]
        );
    }

    #[test]
    fn overlapping_phrases_make_one_finding() {
        let set = small(GUARANTEE);
        let found = set.assess("", "guaranteed returns", "X", "en").findings;
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].start, found[0].end), (0, 18));
    }

    #[test]
    fn spans_count_utf16_code_units() {
        let set = small(GUARANTEE);
        // The emoji is two UTF-16 units, the accented letter one.
        let body = "🚀 Café: guaranteed";
        let found = set.assess("", body, "X", "en").findings;
        assert_eq!((found[0].start, found[0].end), (9, 19));
        assert_eq!(utf16_slice(body, 9, 19), "guaranteed");
    }

    #[test]
    fn lower_casing_that_changes_length_keeps_spans_on_the_source() {
        let set = small(GUARANTEE);
        // 'İ' lower-cases to two characters; the span still maps to the source.
        let body = "İİ GUARANTEED";
        let found = set.assess("", body, "X", "en").findings;
        assert_eq!(
            utf16_slice(body, found[0].start, found[0].end),
            "GUARANTEED"
        );
    }

    #[test]
    fn titles_are_checked_too() {
        let set = small(GUARANTEE);
        let found = set
            .assess("Risk-free yield", "Plain body.", "X", "en")
            .findings;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, Field::Title);
        assert_eq!((found[0].start, found[0].end), (0, 9));
    }

    #[test]
    fn require_rules_point_at_the_end_of_the_body() {
        let set = small(
            r#"
            [[rule]]
            id = "risk-disclosure"
            kind = "require"
            severity = "BLOCKING"
            weight = 25
            message = "add a risk warning"
            satisfied_by = ["you could lose"]
        "#,
        );
        let body = "Buy 🚀";
        let found = set.assess("", body, "X", "en").findings;
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].start, found[0].end), (6, 6));
        assert!(set
            .assess("", "You  COULD\nlose money.", "X", "en")
            .findings
            .is_empty());
    }

    #[test]
    fn satisfied_flag_rules_stay_silent() {
        let set = small(
            r#"
            [[rule]]
            id = "performance"
            severity = "BLOCKING"
            weight = 30
            message = "m"
            patterns = ['\b(?:returned|gained)\s+\d+(?:\.\d+)?\s*%']
            satisfied_by = ["past performance is not indicative"]
        "#,
        );
        assert_eq!(
            spans(&set, "Our fund RETURNED 45.5 % last year."),
            vec![("performance".into(), "RETURNED 45.5 %".into())]
        );
        assert!(spans(
            &set,
            "It returned 45% last year. Past performance is not indicative of future results."
        )
        .is_empty());
    }

    #[test]
    fn rules_apply_only_to_their_languages() {
        let set = small(&format!("{GUARANTEE}\nlanguages = [\"en\"]"));
        assert_eq!(set.assess("", "guaranteed", "X", "en-GB").findings.len(), 1);
        assert!(set.assess("", "guaranteed", "X", "de").findings.is_empty());
    }

    #[test]
    fn the_score_adds_topic_and_weights_and_caps_at_100() {
        let set = RuleSet::from_toml(&format!(
            "senior_review_threshold = 50\ndefault_topic_weight = 5\n[topics]\nDERIVATIVES = 30\n{GUARANTEE}"
        ))
        .expect("rules");
        let clean = set.assess("", "Hello.", "markets", "en");
        assert_eq!(clean.risk_score, 5);
        assert!(!clean.blocked && !clean.senior_review_required);
        let one = set.assess("", "guaranteed", "derivatives", "en");
        assert_eq!(one.risk_score, 70);
        assert!(one.blocked && one.senior_review_required);
        // A second finding of the same rule adds a quarter of its weight.
        let two = set.assess("", "guaranteed. guaranteed", "x", "en");
        assert_eq!(two.risk_score, 5 + 40 + 10);
        let many = set.assess("", &"guaranteed. ".repeat(40), "derivatives", "en");
        assert_eq!(many.risk_score, 100);
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let cases = [
            ("senior_review_threshold = 50\n[[rule]]\nid = \"x\"\nseverity = \"BLOCKING\"\nweight = 1\nmessage = \"m\"\n", "needs phrases"),
            ("senior_review_threshold = 50\n[[rule]]\nid = \"x\"\nseverity = \"BLOCKING\"\nweight = 1\nmessage = \"m\"\npatterns = [\"(\"]\n", "invalid pattern"),
            ("senior_review_threshold = 50\n[[rule]]\nid = \"x\"\nseverity = \"FATAL\"\nweight = 1\nmessage = \"m\"\nphrases = [\"a\"]\n", "invalid rules file"),
            ("senior_review_threshold = 500\n", "invalid rules file"),
            ("senior_review_threshold = 50\n[[rule]]\nid = \"x\"\nkind = \"require\"\nseverity = \"INFO\"\nweight = 1\nmessage = \"m\"\n", "needs satisfied_by"),
            ("senior_review_threshold = 50\n[[rule]]\nid = \"x\"\nseverity = \"INFO\"\nweight = 1\nmessage = \"m\"\nphrases = [\"a\"]\n[[rule]]\nid = \"x\"\nseverity = \"INFO\"\nweight = 1\nmessage = \"m\"\nphrases = [\"b\"]\n", "defined twice"),
            ("senior_review_threshold = 50\n[[rule]]\nid = \"X Y\"\nseverity = \"INFO\"\nweight = 1\nmessage = \"m\"\nphrases = [\"a\"]\n", "lower-case"),
            ("senior_review_threshold = 50\nsurprise = 1\n", "invalid rules file"),
        ];
        for (text, expected) in cases {
            let error = RuleSet::from_toml(text).expect_err(expected);
            assert!(error.0.contains(expected), "{error} should say {expected}");
        }
    }

    #[test]
    fn the_shipped_rules_cover_the_required_areas() {
        let set = shipped();
        let ids: Vec<&str> = set.rules.iter().map(|r| r.id.as_str()).collect();
        for id in [
            "guarantee-language",
            "performance-without-disclaimer",
            "missing-risk-disclosure",
            "superlatives",
            "price-target",
            "undisclosed-conflict",
        ] {
            assert!(ids.contains(&id), "missing rule {id}");
        }
    }

    #[test]
    fn the_content_hash_is_unambiguous_and_stable() {
        let a = content_hash("ab", "c", "T", "en");
        let b = content_hash("a", "bc", "T", "en");
        assert_ne!(a, b);
        assert_eq!(a, content_hash("ab", "c", "T", "en"));
        assert_eq!(a.len(), 64);
        assert_ne!(
            content_hash("t", "b", "T", "en"),
            content_hash("t", "b", "T", "de")
        );
        // Pinned, so a change to the encoding (which would orphan every stored approval)
        // cannot go unnoticed.
        assert_eq!(
            content_hash("", "", "", ""),
            hex::encode(Sha256::digest(
                [b"tradegraph.content.v1\n".as_slice(), &[0u8; 32]].concat()
            ))
        );
    }

    proptest! {
        #[test]
        fn spans_always_slice_the_source(body in "\\PC{0,200}") {
            let set = shipped();
            let units = body.encode_utf16().count() as u32;
            for finding in set.assess(&body, &body, "GENERAL", "en").findings {
                prop_assert!(finding.start <= finding.end && finding.end <= units);
                // A span never splits a surrogate pair.
                let slice: Vec<u16> = body.encode_utf16().collect();
                let piece = &slice[finding.start as usize..finding.end as usize];
                prop_assert!(String::from_utf16(piece).is_ok());
            }
        }

        #[test]
        fn whitespace_and_case_never_change_what_is_found(
            words in proptest::collection::vec(
                prop_oneof![
                    Just("guaranteed"), Just("returns"), Just("risk-free"), Just("best"),
                    Just("not"), Just("the"), Just("coin"), Just("safest"), Just("."),
                ],
                0..20,
            ),
            gaps in proptest::collection::vec(prop_oneof![Just(" "), Just("  "), Just("\n"), Just("\t ")], 20),
        ) {
            let set = shipped();
            let plain = words.join(" ");
            let mut noisy = String::new();
            for (i, word) in words.iter().enumerate() {
                if i > 0 { noisy.push_str(gaps[i]); }
                noisy.push_str(&word.to_uppercase());
            }
            let rules = |body: &str| -> Vec<String> {
                set.assess("", body, "GENERAL", "en").findings.into_iter().map(|f| f.rule).collect()
            };
            prop_assert_eq!(rules(&plain), rules(&noisy));
        }
    }

    #[derive(Deserialize)]
    struct Corpus {
        sample: Vec<Sample>,
    }

    #[derive(Deserialize)]
    struct Sample {
        name: String,
        topic: String,
        title: String,
        body: String,
        #[serde(default = "english")]
        language: String,
        blocked: bool,
        score: u8,
        #[serde(default)]
        finding: Vec<ExpectedFinding>,
    }

    fn english() -> String {
        "en".into()
    }

    #[derive(Deserialize, Debug, PartialEq)]
    struct ExpectedFinding {
        rule: String,
        #[serde(default = "body_field")]
        field: Field,
        start: u32,
        end: u32,
        text: String,
    }

    fn body_field() -> Field {
        Field::Body
    }

    #[test]
    fn the_curated_corpus_gives_the_expected_findings() {
        let corpus: Corpus =
            toml::from_str(include_str!("../../tests/fixtures/compliance_corpus.toml"))
                .expect("the corpus parses");
        assert!(corpus.sample.len() >= 30, "at least 30 samples");
        let compliant = corpus
            .sample
            .iter()
            .filter(|s| !s.blocked && s.finding.is_empty());
        assert!(compliant.count() >= 10, "compliant samples too");
        let set = shipped();
        let mut failures = Vec::new();
        for sample in &corpus.sample {
            let assessment =
                set.assess(&sample.title, &sample.body, &sample.topic, &sample.language);
            let actual: Vec<ExpectedFinding> = assessment
                .findings
                .iter()
                .map(|f| ExpectedFinding {
                    rule: f.rule.clone(),
                    field: f.field,
                    start: f.start,
                    end: f.end,
                    text: utf16_slice(
                        if f.field == Field::Title {
                            &sample.title
                        } else {
                            &sample.body
                        },
                        f.start,
                        f.end,
                    ),
                })
                .collect();
            if actual != sample.finding
                || assessment.blocked != sample.blocked
                || assessment.risk_score != sample.score
            {
                failures.push(format!(
                    "{}: blocked {} score {} findings {:?}",
                    sample.name, assessment.blocked, assessment.risk_score, actual
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
