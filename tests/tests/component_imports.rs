//! Every component the project builds imports only what Spin ≥ 3.4 serves:
//! WASI 0.2 interfaces, `spin:postgres/postgres@4.0.0` and
//! `fermyon:spin/variables@2.0.0`, and exports the WASI 0.2 HTTP handler.

mod support;

use wasmparser::{Parser, Payload};

/// The top-level imports and exports of a component.
fn interface_names(bytes: &[u8]) -> (Vec<String>, Vec<String>) {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components have their own sections; only the outer
    // component's count.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.expect("a valid component") {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    imports.push(import.unwrap().name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    exports.push(export.unwrap().name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

fn allowed(import: &str) -> bool {
    let wasi_0_2 = import.starts_with("wasi:") && import.contains("@0.2.");
    wasi_0_2 || import == "spin:postgres/postgres@4.0.0" || import == "fermyon:spin/variables@2.0.0"
}

#[test]
fn components_import_only_what_spin_serves() {
    // Every component of spin.toml, and the test probe.
    let mut files: Vec<_> = support::project_manifest()
        .components
        .values()
        .map(|c| c.source.clone())
        .collect();
    files.push(support::wasm("test-probe"));
    assert!(files.len() >= 2);
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let (imports, exports) = interface_names(&bytes);
        assert!(!imports.is_empty(), "{}: no imports found", file.display());
        let foreign: Vec<_> = imports.iter().filter(|i| !allowed(i)).collect();
        assert!(
            foreign.is_empty(),
            "{} imports what Spin 3.4 may not serve: {foreign:?}",
            file.display()
        );
        assert!(
            exports
                .iter()
                .any(|e| e.starts_with("wasi:http/incoming-handler@0.2.")),
            "{} exports no WASI 0.2 HTTP handler: {exports:?}",
            file.display()
        );
    }
}

#[test]
fn the_check_notices_a_foreign_import() {
    assert!(allowed("wasi:io/poll@0.2.6"));
    assert!(allowed("spin:postgres/postgres@4.0.0"));
    assert!(!allowed("spin:postgres/postgres@4.2.0"));
    assert!(!allowed("wasi:http/types@0.3.0-rc-2026-03-15"));
    assert!(!allowed("fermyon:spin/key-value@2.0.0"));
}
