//! Application variables: defaults, environment and explicit overrides,
//! per-component templates, and a missing required variable stopping the
//! app before it serves.

mod support;

use spin_host::runtime::HostError;
use spin_host::variables::{Sources, VariablesError};
use support::{Server, manifest, runtime, sources};

const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "vars"

[variables]
greeting = { default = "hello" }
name = { required = true }
token = { required = true, secret = true }

[[trigger.http]]
route = "/..."
component = "probe"

[component.probe]
source = "{probe}"
[component.probe.variables]
message = "{{ greeting }}, {{ name }}!"
token = "{{ token }}"
plain = "literal"
"#;

async fn var(server: &Server, name: &str) -> serde_json::Value {
    server.get(&format!("/?var={name}")).await.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn defaults_and_explicit_values() {
    let server = Server::start(
        &manifest(APP),
        &sources(&[("name", "Ada"), ("token", "s3cret")]),
    )
    .await
    .unwrap();
    assert_eq!(var(&server, "message").await["value"], "hello, Ada!");
    assert_eq!(var(&server, "token").await["value"], "s3cret");
    assert_eq!(var(&server, "plain").await["value"], "literal");
    // Application variables are not visible unless the component maps them.
    let undefined = var(&server, "greeting").await["error"].to_string();
    assert!(undefined.contains("Undefined"), "{undefined}");
    let invalid = var(&server, "Not-Valid").await["error"].to_string();
    assert!(invalid.contains("InvalidName"), "{invalid}");
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_overrides_defaults_and_explicit_overrides_environment() {
    let env = |key: &str| match key {
        "SPIN_VARIABLE_GREETING" => Some("hi".to_owned()),
        "SPIN_VARIABLE_NAME" => Some("Env".to_owned()),
        "SPIN_VARIABLE_TOKEN" => Some("t".to_owned()),
        _ => None,
    };
    let only_env = Sources {
        explicit: Default::default(),
        env: Some(Box::new(env)),
    };
    let server = Server::start(&manifest(APP), &only_env).await.unwrap();
    assert_eq!(var(&server, "message").await["value"], "hi, Env!");

    let both = Sources {
        explicit: [("name".to_owned(), "Explicit".to_owned())].into(),
        env: Some(Box::new(env)),
    };
    let server = Server::start(&manifest(APP), &both).await.unwrap();
    assert_eq!(var(&server, "message").await["value"], "hi, Explicit!");
}

#[test]
fn a_missing_required_variable_is_a_startup_error_naming_it() {
    let err = runtime()
        .load(&manifest(APP), &sources(&[("name", "Ada")]))
        .err()
        .expect("loading must fail");
    assert!(
        matches!(
            &err,
            HostError::Variables(VariablesError::MissingRequired { name, .. }) if name == "token"
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("\"token\""), "{text}");
    assert!(text.contains("SPIN_VARIABLE_TOKEN"), "{text}");
}
