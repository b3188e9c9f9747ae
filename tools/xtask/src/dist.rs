//! `cargo xtask dist`: the release archives of `local-agent`, for learners
//! who have no Rust.
//!
//! - Windows: `x86_64-pc-windows-gnu`, built with mingw-w64, in a `.zip`.
//! - Linux: `x86_64-unknown-linux-musl`, one statically linked binary that
//!   runs on any x86-64 distribution (no glibc version to match, no shared
//!   library to find), in a `.tar.gz`. The C inside (SQLite from rusqlite's
//!   `bundled`, sqlite-vec, ring under rustls) is compiled with `musl-gcc`.
//!
//! Each archive holds the binary, README's "Install the agent" section as
//! `INSTALL.md` and the licence files; `SHA256SUMS` lists the archives.
//! The Rust targets are added with rustup; the C cross compilers are
//! Debian's `gcc-mingw-w64-x86-64` and `musl-tools`, which `./dev dist`
//! installs (as `./dev` does for the other commands).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// A platform the agent is released for.
pub struct Platform {
    /// The Rust target.
    pub triple: &'static str,
    /// The C compiler for it, and the Debian package holding it.
    pub cc: &'static str,
    pub package: &'static str,
    /// Extra flags for that compiler.
    cflags: &'static str,
    /// The archive's name part (`local-agent-<version>-<name>`).
    name: &'static str,
    binary: &'static str,
    zip: bool,
}

pub const WINDOWS: Platform = Platform {
    triple: "x86_64-pc-windows-gnu",
    cc: "x86_64-w64-mingw32-gcc",
    package: "gcc-mingw-w64-x86-64",
    cflags: "",
    name: "x86_64-windows",
    binary: "local-agent.exe",
    zip: true,
};

pub const LINUX: Platform = Platform {
    triple: "x86_64-unknown-linux-musl",
    cc: "musl-gcc",
    package: "musl-tools",
    // sqlite-vec 0.1.9 names the BSD types u_int8_t, u_int16_t and
    // u_int64_t outside Windows, which musl declares only in <sys/types.h>
    // and the file does not include; they are the <stdint.h> types.
    cflags: "-Du_int8_t=uint8_t -Du_int16_t=uint16_t -Du_int64_t=uint64_t",
    name: "x86_64-linux",
    binary: "local-agent",
    zip: false,
};

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

impl Platform {
    /// Why this platform cannot be built here, if it cannot.
    pub fn missing(&self) -> Option<String> {
        (!on_path(self.cc)).then(|| {
            format!(
                "no {} (Debian: apt-get install {}; ./dev installs it)",
                self.cc, self.package
            )
        })
    }

    /// Adds the Rust target through rustup (a no-op when it is there).
    fn add_rust_target(&self) -> Result<()> {
        if !on_path("rustup") {
            // A toolchain without rustup must carry the target itself;
            // cargo says so clearly if it does not.
            return Ok(());
        }
        let status = Command::new("rustup")
            .args(["-q", "target", "add", self.triple])
            .status()
            .context("running rustup")?;
        if !status.success() {
            bail!("rustup target add {} failed ({status})", self.triple);
        }
        Ok(())
    }

    /// Builds `local-agent` in release mode for this platform; answers the
    /// binary's path.
    pub fn build(&self, root: &Path) -> Result<PathBuf> {
        if let Some(missing) = self.missing() {
            bail!("cannot build for {}: {missing}", self.triple);
        }
        self.add_rust_target()?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let args = [
            "build",
            "--release",
            "--locked",
            "-p",
            "local-agent",
            "--bin",
            "local-agent",
            "--target",
            self.triple,
        ];
        eprintln!("cargo {}", args.join(" "));
        // cc-rs reads CC_<target>: the C parts are built with the
        // platform's compiler, the Rust linker is the target's default
        // (mingw's gcc; the musl target's self-contained one).
        let triple = self.triple.replace('-', "_");
        let status = Command::new(cargo)
            .current_dir(root)
            .args(args)
            .env(format!("CC_{triple}"), self.cc)
            .env(format!("CFLAGS_{triple}"), self.cflags)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("building local-agent for {} failed ({status})", self.triple);
        }
        Ok(target_dir(root)
            .join(self.triple)
            .join("release")
            .join(self.binary))
    }
}

pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// README's section for learners, from its heading to the next one of the
/// same level.
fn install_section(root: &Path) -> Result<String> {
    let readme = std::fs::read_to_string(root.join("README.md")).context("reading README.md")?;
    let start = readme
        .find("\n## Install the agent")
        .context("README.md has no \"## Install the agent\" section")?
        + 1;
    let end = readme[start + 3..]
        .find("\n## ")
        .map_or(readme.len(), |i| start + 3 + i + 1);
    Ok(readme[start..end].trim_end().to_owned() + "\n")
}

/// The files beside the binary in every archive.
fn extras(root: &Path) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut files = vec![("INSTALL.md", install_section(root)?.into_bytes())];
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        let bytes =
            std::fs::read(root.join(licence)).with_context(|| format!("reading {licence}"))?;
        files.push((licence, bytes));
    }
    Ok(files)
}

fn write_zip(
    path: &Path,
    folder: &str,
    binary: (&str, &Path),
    extras: &[(&str, Vec<u8>)],
) -> Result<()> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(format!("{folder}/{}", binary.0), options)?;
    zip.write_all(&std::fs::read(binary.1)?)?;
    for (name, bytes) in extras {
        zip.start_file(format!("{folder}/{name}"), options)?;
        zip.write_all(bytes)?;
    }
    zip.finish()?;
    Ok(())
}

fn write_tar_gz(
    path: &Path,
    folder: &str,
    binary: (&str, &Path),
    extras: &[(&str, Vec<u8>)],
) -> Result<()> {
    let gz =
        flate2::write::GzEncoder::new(std::fs::File::create(path)?, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, bytes: &[u8], mode: u32| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, format!("{folder}/{name}"), bytes)?;
        Ok(())
    };
    add(binary.0, &std::fs::read(binary.1)?, 0o755)?;
    for (name, bytes) in extras {
        add(name, bytes, 0o644)?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}

fn sha256_hex(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Builds both platforms and writes their archives and `SHA256SUMS` into
/// `out`.
pub fn run(root: &Path, out: &Path) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let missing: Vec<String> = [&WINDOWS, &LINUX]
        .iter()
        .filter_map(|p| p.missing().map(|m| format!("{}: {m}", p.triple)))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}; `./dev dist` installs them, then runs this command",
            missing.join("; ")
        );
    }
    let extras = extras(root)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut sums = String::new();
    let mut lines = Vec::new();
    for platform in [&WINDOWS, &LINUX] {
        let binary = platform.build(root)?;
        let folder = format!("local-agent-{version}-{}", platform.name);
        let archive = out.join(format!(
            "{folder}.{}",
            if platform.zip { "zip" } else { "tar.gz" }
        ));
        let write = if platform.zip {
            write_zip
        } else {
            write_tar_gz
        };
        write(&archive, &folder, (platform.binary, &binary), &extras)
            .with_context(|| format!("writing {}", archive.display()))?;
        let name = archive.file_name().unwrap().to_string_lossy().into_owned();
        sums.push_str(&format!("{}  {name}\n", sha256_hex(&archive)?));
        lines.push(format!(
            "{name}: {} ({} binary, {})",
            mib(std::fs::metadata(&archive)?.len()),
            platform.binary,
            mib(std::fs::metadata(&binary)?.len()),
        ));
    }
    std::fs::write(out.join("SHA256SUMS"), &sums)?;
    println!("{}:", out.display());
    for line in lines {
        println!("  {line}");
    }
    println!("  SHA256SUMS");
    Ok(())
}
