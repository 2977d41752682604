//! Just enough of a Dockerfile reader to know, per stage, which files it holds (from `COPY`),
//! what it runs (`ENTRYPOINT`, `CMD`, with Docker's inheritance rules) and how it builds
//! (`WORKDIR`, `RUN`). No container engine is needed.

use std::collections::BTreeMap;

/// Where a file of a stage came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `--from` stage (or image); `None` for the build context.
    pub from: Option<String>,
    /// Path in that stage (or the context).
    pub path: String,
}

/// One `FROM` … up to the next.
#[derive(Debug, Clone, Default)]
pub struct Stage {
    /// `AS` name.
    pub name: Option<String>,
    /// The image or earlier stage it starts from.
    pub base: String,
    /// Working directory.
    pub workdir: String,
    /// Files it holds that the Dockerfile put there (absolute path → where from).
    pub files: BTreeMap<String, Source>,
    /// `ENTRYPOINT`, exec form.
    pub entrypoint: Option<Vec<String>>,
    /// `CMD`, exec form.
    pub cmd: Option<Vec<String>>,
    /// `RUN` commands, in order (continuations joined).
    pub runs: Vec<String>,
    /// Instructions in shell form where only exec form works (`ENTRYPOINT`/`CMD`).
    pub shell_form: Vec<String>,
}

/// Logical lines: comments dropped, `\` continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(stripped) = t.strip_suffix('\\') {
            cur.push_str(stripped);
            cur.push(' ');
        } else {
            cur.push_str(t);
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_string());
            }
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn join(dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", dir.trim_end_matches('/'), path)
    }
}

fn basename(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

/// Parses a Dockerfile into its stages.
pub fn parse(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    // Whether the current stage set CMD itself (ENTRYPOINT resets an inherited CMD only).
    let mut cmd_here = false;
    for line in logical_lines(text) {
        let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let rest = rest.trim();
        let instr = instr.to_ascii_uppercase();
        if instr == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let base = words
                .iter()
                .find(|w| !w.starts_with("--"))
                .unwrap()
                .to_string();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .map(|i| words[i + 1].to_string());
            let mut s = stages
                .iter()
                .find(|s| s.name.as_deref() == Some(base.as_str()))
                .cloned()
                .unwrap_or_else(|| Stage {
                    workdir: "/".into(),
                    ..Stage::default()
                });
            s.runs.clear();
            s.name = name;
            s.base = base;
            stages.push(s);
            cmd_here = false;
            continue;
        }
        let s = stages.last_mut().expect("an instruction before FROM");
        let exec_form = |rest: &str, s: &mut Stage| -> Vec<String> {
            match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => v,
                Err(_) => {
                    s.shell_form.push(format!("{instr} {rest}"));
                    vec!["/bin/sh".into(), "-c".into(), rest.to_string()]
                }
            }
        };
        match instr.as_str() {
            "WORKDIR" => s.workdir = join(&s.workdir.clone(), rest),
            "RUN" => s.runs.push(rest.to_string()),
            "ENTRYPOINT" => {
                s.entrypoint = Some(exec_form(rest, s));
                if !cmd_here {
                    s.cmd = None;
                }
            }
            "CMD" => {
                s.cmd = Some(exec_form(rest, s));
                cmd_here = true;
            }
            "COPY" | "ADD" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let from = words
                    .iter()
                    .find_map(|w| w.strip_prefix("--from="))
                    .map(str::to_string);
                let paths: Vec<&str> = words
                    .iter()
                    .copied()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (dest, srcs) = paths.split_last().expect("COPY needs a destination");
                let dest = join(&s.workdir, dest);
                let into_dir = dest.ends_with('/') || srcs.len() > 1;
                for src in srcs {
                    let path = if into_dir {
                        join(&dest, basename(src))
                    } else {
                        dest.clone()
                    };
                    s.files.insert(
                        path,
                        Source {
                            from: from.clone(),
                            path: src.to_string(),
                        },
                    );
                }
            }
            _ => {}
        }
    }
    stages
}

/// The stage named `name`.
pub fn stage<'a>(stages: &'a [Stage], name: &str) -> &'a Stage {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("the Dockerfile has no stage `{name}`"))
}

/// Directories of the default `PATH` of Debian images, in search order.
pub const PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The file `argv0` runs in `stage`: an absolute path as is, a bare name through `PATH`.
/// `None` when the Dockerfile put no such file there.
pub fn resolve<'a>(stage: &'a Stage, argv0: &str) -> Option<(&'a String, &'a Source)> {
    if argv0.contains('/') {
        return stage.files.get_key_value(argv0);
    }
    PATH.iter()
        .find_map(|d| stage.files.get_key_value(&format!("{d}/{argv0}")))
}
