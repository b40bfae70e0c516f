//! Query limits: depth, complexity, aliases, root fields, nesting; each refused with
//! `QUERY_TOO_COMPLEX` while the server keeps serving.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{code, Backend, TestApp};

both_backends!(oversized_queries_are_refused);

async fn oversized_queries_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, &[("MAX_QUERY_COMPLEXITY", "40")]).await else {
        return;
    };
    // Data queries are held to MAX_QUERY_DEPTH (12)...
    let deep = "{ orders { edges { node { fills { order { fills { order { fills { order { fills { order { fills { id } } } } } } } } } } } } }";
    // ...introspection to a fixed, larger cap that standard introspection fits under.
    let deep_introspection = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(22),
        "} ".repeat(22)
    );
    let aliases = format!(
        "{{ {} }}",
        (0..31)
            .map(|i| format!("a{i}: serverTime"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let roots = format!(
        "{{ {} }}",
        (0..21).map(|_| "serverTime").collect::<Vec<_>>().join(" ")
    );
    let complex = format!(
        "{{ {} }}",
        (0..20)
            .map(|i| format!("m{i}: me {{ id email }}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let nested = format!("{}{}", "{".repeat(200_000), "}".repeat(200_000));
    for (name, query) in [
        ("depth", deep.to_owned()),
        ("introspection depth", deep_introspection),
        ("aliases", aliases),
        ("root fields", roots),
        ("complexity", complex),
        ("nesting", nested),
    ] {
        let (status, body) = app.post(json!({"query": query}), None).await;
        assert_eq!(
            (status, code(&body)),
            (400, "QUERY_TOO_COMPLEX"),
            "{name}: {body}"
        );
    }
    // The introspection query of GraphiQL and code generators (15 levels) is served.
    let standard = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } } } }";
    let (status, body) = app.post(json!({"query": standard}), None).await;
    assert_eq!(status, 200, "standard introspection: {body}");
    let (status, body) = app.post(json!({"query": "{ serverTime }"}), None).await;
    assert_eq!(status, 200, "still serving: {body}");
    assert_eq!(
        body["extensions"]["cost"],
        json!({"complexity": 1, "depth": 1})
    );
}
