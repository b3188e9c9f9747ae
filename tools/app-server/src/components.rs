//! The components spin.toml names: which packages build them (read from
//! each component's `build.command`), built once per process in release
//! for `wasm32-wasip2`, and the manifest pointed at the files built.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use spin_host::manifest::Manifest;

use crate::{Error, repo_root};

/// The project's manifest, parsed as TOML.
fn manifest_table() -> Result<toml::Table, Error> {
    let path = repo_root().join("spin.toml");
    let text =
        std::fs::read_to_string(&path).map_err(Error::io(format!("reading {}", path.display())))?;
    text.parse()
        .map_err(|e| Error::Build(format!("{} is not valid TOML: {e}", path.display())))
}

/// The cargo packages spin.toml's components are built from: the `-p`
/// argument of each `cargo build` in `[component.<id>.build] command`.
pub fn packages() -> Result<Vec<String>, Error> {
    let table = manifest_table()?;
    let components = table
        .get("component")
        .and_then(toml::Value::as_table)
        .ok_or_else(|| Error::Build("spin.toml has no [component] tables".into()))?;
    let mut packages = Vec::new();
    for (id, component) in components {
        let command = component
            .get("build")
            .and_then(|b| b.get("command"))
            .and_then(toml::Value::as_str)
            .ok_or_else(|| Error::Build(format!("component {id} has no build command")))?;
        let mut words = command.split_whitespace();
        let package = words
            .by_ref()
            .skip_while(|w| *w != "-p")
            .nth(1)
            .ok_or_else(|| {
                Error::Build(format!(
                    "component {id}'s build command names no -p package: {command}"
                ))
            })?;
        packages.push(package.to_owned());
    }
    Ok(packages)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Builds `packages` for `wasm32-wasip2` in release and returns the folder
/// of the `.wasm` files. The nested cargo takes the release and wasm32
/// locks, which an outer `cargo test` (debug, host target) does not hold;
/// when they are built already this is a quick check.
pub fn build(packages: &[String]) -> Result<PathBuf, Error> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(repo_root()).args([
        "build",
        "--target",
        "wasm32-wasip2",
        "--release",
        "--quiet",
    ]);
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command
        .status()
        .map_err(Error::io("running cargo to build the components"))?;
    if !status.success() {
        return Err(Error::Build(format!(
            "cargo build of {packages:?} failed ({status})"
        )));
    }
    Ok(output_dir())
}

/// Where [`build`] puts the `.wasm` files: under `CARGO_TARGET_DIR` when
/// it is set, as cargo does, else under the project's `target/`.
pub fn output_dir() -> PathBuf {
    target_dir().join("wasm32-wasip2/release")
}

/// The folder of spin.toml's `.wasm` files, built on the first call of the
/// process.
pub fn wasm_dir() -> Result<&'static Path, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        packages()
            .and_then(|p| build(&p))
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(|e| Error::Build(e.clone()))
}

/// spin.toml as the bundled host reads it, its sources pointed at the
/// files this process built (they differ from spin.toml's when
/// `CARGO_TARGET_DIR` is set).
pub fn project_manifest() -> Result<Manifest, Error> {
    manifest_in(wasm_dir()?)
}

/// spin.toml with its sources pointed at the `.wasm` files in `dir`.
pub fn manifest_in(dir: &Path) -> Result<Manifest, Error> {
    let path = repo_root().join("spin.toml");
    let mut manifest =
        Manifest::from_file(&path).map_err(|e| Error::Build(format!("{}: {e}", path.display())))?;
    for component in manifest.components.values_mut() {
        if let Some(file) = component.source.file_name() {
            component.source = dir.join(file);
        }
    }
    Ok(manifest)
}

/// spin.toml's text as a real Spin reads it from another folder: every
/// component's `source` made the absolute path of the file built.
pub fn project_manifest_text() -> Result<String, Error> {
    manifest_text_in(wasm_dir()?)
}

/// spin.toml's text with every component's `source` the absolute path of
/// its file in `dir`.
pub fn manifest_text_in(dir: &Path) -> Result<String, Error> {
    let mut table = manifest_table()?;
    absolute_sources(&mut table, dir);
    Ok(table.to_string())
}

/// spin.toml's text with only the components `keep` and their routes, their
/// sources as in [`project_manifest_text`]: for an app that needs one
/// component served under settings of its own, without compiling the rest.
pub fn project_manifest_text_of(keep: &[&str]) -> Result<String, Error> {
    let mut table = manifest_table()?;
    absolute_sources(&mut table, wasm_dir()?);
    if let Some(components) = table
        .get_mut("component")
        .and_then(toml::Value::as_table_mut)
    {
        components.retain(|id, _| keep.contains(&id));
    }
    if let Some(routes) = table
        .get_mut("trigger")
        .and_then(|trigger| trigger.get_mut("http"))
        .and_then(toml::Value::as_array_mut)
    {
        routes.retain(|route| {
            route
                .get("component")
                .and_then(toml::Value::as_str)
                .is_some_and(|id| keep.contains(&id))
        });
    }
    Ok(table.to_string())
}

fn absolute_sources(table: &mut toml::Table, dir: &Path) {
    let Some(components) = table
        .get_mut("component")
        .and_then(toml::Value::as_table_mut)
    else {
        return;
    };
    for (_, component) in components.iter_mut() {
        let Some(source) = component.get_mut("source") else {
            continue;
        };
        if let Some(file) = source.as_str().and_then(|s| Path::new(s).file_name()) {
            *source = toml::Value::String(dir.join(file).display().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_of_spin_toml_has_its_package() {
        let packages = packages().unwrap();
        assert!(packages.contains(&"api-content".to_owned()), "{packages:?}");
        assert!(packages.contains(&"api-health".to_owned()), "{packages:?}");
        let components = manifest_table().unwrap()["component"]
            .as_table()
            .unwrap()
            .len();
        assert_eq!(packages.len(), components);
    }
}
