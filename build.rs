//! Build script: prepares the files of the self-hosted GraphiQL playground
//! (`/playground`, served by `src/http/playground.rs`) in `$OUT_DIR/playground/`.
//!
//! GraphiQL and React must be served by the binary itself (the playground has
//! to work without internet access), yet they must come from the npm registry
//! at the versions pinned in `playground/package-lock.json` rather than as
//! copies committed to this repository. So this script runs `npm ci` in a copy
//! of `playground/package*.json` under `$OUT_DIR` (never in the source tree),
//! and copies the few bundle files the page loads next to our own page files.
//!
//! A missing or failing npm (no Node.js, no network) must not stop anyone from
//! building the API server: the script then prints a `cargo:warning` and writes
//! a placeholder page saying how to get the real playground.
//! `TRADEGRAPH_SKIP_PLAYGROUND=1` asks for that placeholder on purpose, for fast
//! builds that do not need the playground.

use std::env;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Files taken from the installed npm packages: (path under the npm
/// directory, name served under `/playground/assets/`). `src/http/playground.rs`
/// embeds each of these names, so they must always be written, if only as
/// placeholders.
const NPM_FILES: &[(&str, &str)] = &[
    (
        "node_modules/react/umd/react.production.min.js",
        "react.production.min.js",
    ),
    (
        "node_modules/react-dom/umd/react-dom.production.min.js",
        "react-dom.production.min.js",
    ),
    ("node_modules/graphiql/graphiql.min.js", "graphiql.min.js"),
    ("node_modules/graphiql/graphiql.min.css", "graphiql.min.css"),
    // The dashboard's subscription client (UMD build: the global `graphqlWs`).
    (
        "node_modules/graphql-ws/umd/graphql-ws.min.js",
        "graphql-ws.min.js",
    ),
];

/// Our own files in `playground/` (the playground's, then the example dashboard's),
/// copied as they are.
const OWN_FILES: &[&str] = &[
    "playground.js",
    "playground.css",
    "dashboard/index.html",
    "dashboard/dashboard.js",
    "dashboard/dashboard.css",
    "dashboard/dashboard.graphql",
];

/// Records which package.json and lock the npm directory was installed from,
/// so that `npm ci` runs again only when they change.
const STAMP: &str = ".tradegraph-npm-stamp";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    // A directory: cargo then also notices new example files.
    println!("cargo:rerun-if-changed=playground");
    println!("cargo:rerun-if-env-changed=TRADEGRAPH_SKIP_PLAYGROUND");

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let source = manifest_dir.join("playground");
    let dest = out_dir.join("playground");
    fs::create_dir_all(dest.join("dashboard"))?;

    for name in OWN_FILES {
        copy(&source.join(name), &dest.join(name))?;
    }
    fs::write(dest.join("examples.js"), examples_js(&source)?)?;

    let outcome = if skip_requested() {
        Err("TRADEGRAPH_SKIP_PLAYGROUND is set, so npm was not run.".to_owned())
    } else {
        install_npm_files(&source, &out_dir.join("playground-npm"), &dest)
    };

    match outcome {
        Ok(()) => {
            copy(&source.join("index.html"), &dest.join("index.html"))?;
            println!("cargo:rustc-env=TRADEGRAPH_PLAYGROUND_ASSETS=npm");
        }
        Err(reason) => {
            let mut lines = reason.lines().filter(|line| !line.trim().is_empty());
            println!(
                "cargo:warning=GraphiQL playground assets were not built; /playground will show a placeholder: {}",
                lines.next().unwrap_or("unknown reason")
            );
            for line in lines.take(12) {
                println!("cargo:warning=    {line}");
            }
            for (_, name) in NPM_FILES {
                fs::write(dest.join(name), placeholder_asset(name))?;
            }
            fs::write(dest.join("index.html"), placeholder_page(&reason))?;
            println!("cargo:rustc-env=TRADEGRAPH_PLAYGROUND_ASSETS=placeholder");
        }
    }
    Ok(())
}

fn skip_requested() -> bool {
    env::var("TRADEGRAPH_SKIP_PLAYGROUND")
        .map(|value| !matches!(value.trim(), "" | "0" | "false" | "no"))
        .unwrap_or(false)
}

fn copy(from: &Path, to: &Path) -> io::Result<()> {
    let bytes = fs::read(from)
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", from.display())))?;
    fs::write(to, bytes)
}

/// Installs the pinned npm packages in `npm_dir` (unless already installed
/// from the same package.json and lock) and copies [`NPM_FILES`] into `dest`.
/// The error is a human-readable reason, shown in the warning and the page.
fn install_npm_files(source: &Path, npm_dir: &Path, dest: &Path) -> Result<(), String> {
    let read = |name: &str| {
        fs::read(source.join(name)).map_err(|err| format!("cannot read playground/{name}: {err}"))
    };
    let package_json = read("package.json")?;
    let lock = read("package-lock.json")?;
    let mut wanted_stamp = package_json.clone();
    wanted_stamp.push(0);
    wanted_stamp.extend_from_slice(&lock);

    let stamp_path = npm_dir.join(STAMP);
    let up_to_date = npm_dir.join("node_modules").is_dir()
        && fs::read(&stamp_path).is_ok_and(|stamp| stamp == wanted_stamp);
    if !up_to_date {
        let io_err = |err: io::Error| format!("cannot prepare {}: {err}", npm_dir.display());
        fs::create_dir_all(npm_dir).map_err(io_err)?;
        // Removed first, so that an interrupted `npm ci` is never taken for a
        // finished one.
        match fs::remove_file(&stamp_path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(io_err(err)),
            _ => {}
        }
        fs::write(npm_dir.join("package.json"), &package_json).map_err(io_err)?;
        fs::write(npm_dir.join("package-lock.json"), &lock).map_err(io_err)?;
        run_npm_ci(npm_dir)?;
        fs::write(&stamp_path, &wanted_stamp).map_err(io_err)?;
    }

    for (from, name) in NPM_FILES {
        let bytes = fs::read(npm_dir.join(from)).map_err(|err| {
            format!(
                "npm ci succeeded but {from} is missing ({err}); did a package change its layout?"
            )
        })?;
        let bytes = strip_source_map_comment(bytes);
        fs::write(dest.join(name), bytes).map_err(|err| format!("cannot write {name}: {err}"))?;
    }
    Ok(())
}

fn run_npm_ci(npm_dir: &Path) -> Result<(), String> {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    let output = Command::new(npm)
        .args([
            "ci",
            // Only prebuilt files are used; no package needs to run code.
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            // Reuse npm's cache when it has the exact tarballs (the lock pins
            // their integrity hashes), so rebuilds do not need the network.
            "--prefer-offline",
            // Give up on an unreachable registry within seconds rather than
            // npm's default minute and more of retries.
            "--fetch-timeout=120000",
            "--fetch-retry-mintimeout=2000",
            "--fetch-retry-maxtimeout=10000",
            "--loglevel=error",
        ])
        .current_dir(npm_dir)
        .env("npm_config_update_notifier", "false")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| {
            format!("could not run `{npm}` ({err}). Install Node.js (which includes npm), then rebuild.")
        })?;
    if output.status.success() {
        return Ok(());
    }
    // npm's first lines say what failed; the rest is mostly a stack trace.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut summary: Vec<&str> = stderr
        .lines()
        .filter(|line| {
            let content = line.trim_start_matches("npm error").trim();
            !content.is_empty()
                && !content.starts_with("at ")
                && !line.contains("Unknown user config")
        })
        .take(6)
        .collect();
    if let Some(log) = stderr.lines().find(|line| line.contains("complete log")) {
        if !summary.contains(&log) {
            summary.push(log);
        }
    }
    Err(format!(
        "`npm ci` failed ({}) in {}. Is the npm registry reachable?\n{}",
        output.status,
        npm_dir.display(),
        summary.join("\n")
    ))
}

/// Drops a trailing `sourceMappingURL` comment: the maps are not embedded, and
/// a browser with developer tools open would otherwise ask for them and get
/// 404s.
fn strip_source_map_comment(mut bytes: Vec<u8>) -> Vec<u8> {
    let trimmed_len = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let line_start = bytes[..trimmed_len]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let last_line = &bytes[line_start..trimmed_len];
    if last_line.starts_with(b"//# sourceMappingURL=")
        || last_line.starts_with(b"/*# sourceMappingURL=")
    {
        bytes.truncate(line_start);
    }
    bytes
}

/// Generates `examples.js` from `playground/*.graphql` (sorted by name), each
/// with the variables in `NAME.variables.json` when that file exists. They are
/// embedded at build time so that the example tabs always match the binary.
fn examples_js(source: &Path) -> Result<String, Box<dyn Error>> {
    let mut files: Vec<PathBuf> = fs::read_dir(source)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "graphql"))
        .collect();
    files.sort();

    let mut js = String::from(
        "// Generated by build.rs from playground/*.graphql; edit those files instead.\n\
         window.TRADEGRAPH_PLAYGROUND_EXAMPLES = [\n",
    );
    for path in files {
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .ok_or("example file name is not UTF-8")?;
        let query = fs::read_to_string(&path)?;
        let variables_path = source.join(format!("{name}.variables.json"));
        let variables = match fs::read_to_string(&variables_path) {
            Ok(text) => json_string(&text),
            Err(err) if err.kind() == io::ErrorKind::NotFound => "null".to_owned(),
            Err(err) => return Err(err.into()),
        };
        writeln!(
            js,
            "  {{ \"name\": {}, \"query\": {}, \"variables\": {} }},",
            json_string(name),
            json_string(&query),
            variables
        )?;
    }
    js.push_str("];\n");
    Ok(js)
}

/// A JSON string literal that is also safe anywhere in JavaScript or HTML.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn placeholder_asset(name: &str) -> String {
    format!("/* tradegraph: {name} was not built into this binary; open /playground for how to fix that. */\n")
}

fn placeholder_page(reason: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>tradegraph playground (not built)</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="/playground/assets/playground.css">
  </head>
  <body>
    <div class="tg-message">
      <h1>The GraphQL playground was not built into this server</h1>
      <p>The GraphiQL assets could not be built when this binary was compiled, so there is
        no playground here. The GraphQL API itself works as usual at <code>/graphql</code>.</p>
      <p>To get the playground, on the machine that builds the server:</p>
      <ol>
        <li>install Node.js 18 or later (it includes <code>npm</code>) and make sure the npm
          registry is reachable (or npm's cache already holds the packages);</li>
        <li>make sure <code>TRADEGRAPH_SKIP_PLAYGROUND</code> is not set;</li>
        <li>rebuild: <code>cargo build --release</code> (or <code>touch build.rs</code> first if
          nothing else changed).</li>
      </ol>
      <p>What went wrong:</p>
      <pre>{}</pre>
    </div>
  </body>
</html>
"#,
        html_escape(reason)
    )
}
