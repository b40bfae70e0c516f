//! The content compliance rules in force: loaded from their file at start, swapped
//! whole on reload, so a check always runs one consistent rule set.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::domain::compliance_rules::RuleSet;
use crate::error::ApiError;

/// Where the rules come from when `COMPLIANCE_RULES_PATH` is not set.
const DEFAULT_PATH: &str = "config/compliance_rules.toml";
/// The shipped rules, for a binary started away from its source tree.
const BUILT_IN: &str = include_str!("../../config/compliance_rules.toml");

/// A rule set and where and when it was loaded.
#[derive(Clone, Debug)]
pub struct LoadedRules {
    pub rules: Arc<RuleSet>,
    /// The file read, or `built-in`.
    pub source: String,
    pub loaded_at: DateTime<Utc>,
}

/// The rules in force, cheap to read from any request.
pub struct ComplianceRules {
    configured: Option<PathBuf>,
    current: RwLock<LoadedRules>,
}

impl ComplianceRules {
    /// Loads the rules; an explicitly configured file must exist and be valid.
    pub fn load(configured: Option<PathBuf>) -> anyhow::Result<ComplianceRules> {
        let current = read(configured.as_deref())?;
        tracing::info!(source = %current.source, rules = current.rules.rules.len(), fingerprint = %current.rules.fingerprint, "compliance rules loaded");
        Ok(ComplianceRules {
            configured,
            current: RwLock::new(current),
        })
    }

    /// The rules in force now.
    pub fn current(&self) -> LoadedRules {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-reads the file. A file that does not load is refused with the reason and the
    /// rules in force stay.
    pub fn reload(&self) -> Result<LoadedRules, ApiError> {
        let loaded = read(self.configured.as_deref()).map_err(|e| {
            ApiError::Conflict(format!(
                "the rules file was not loaded ({e:#}); the rules in force stay"
            ))
        })?;
        tracing::info!(source = %loaded.source, fingerprint = %loaded.rules.fingerprint, "compliance rules reloaded");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded.clone();
        Ok(loaded)
    }
}

fn read(configured: Option<&Path>) -> anyhow::Result<LoadedRules> {
    let (text, source) = match configured {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            path.display().to_string(),
        ),
        None => match std::fs::read_to_string(DEFAULT_PATH) {
            Ok(text) => (text, DEFAULT_PATH.to_owned()),
            Err(_) => (BUILT_IN.to_owned(), "built-in".to_owned()),
        },
    };
    let rules = RuleSet::from_toml(&text).with_context(|| format!("in {source}"))?;
    Ok(LoadedRules {
        rules: Arc::new(rules),
        source,
        loaded_at: Utc::now(),
    })
}
