//! Dockerfile parsing: text → stages of instructions, each with its line number.
//!
//! Contract: `parse` understands the Dockerfile syntax `docker build` accepts (comments,
//! line continuations, shell and exec (JSON) forms, flags such as `--from=`/`--chown=`,
//! multi-stage `FROM … AS name`) and refuses anything else with the line it is on. It does
//! not expand variables: that depends on build args and on ENV/ARG seen so far, so the
//! builder calls `expand` as it walks the instructions, the way Docker does.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    #[error("Dockerfile line {line}: unknown instruction {word:?}")]
    UnknownInstruction { line: usize, word: String },
    #[error("Dockerfile line {line}: {instruction}: {reason}")]
    Invalid {
        line: usize,
        instruction: &'static str,
        reason: String,
    },
    #[error(
        "Dockerfile line {line}: {instruction} before the first FROM (only ARG may come first)"
    )]
    BeforeFrom {
        line: usize,
        instruction: &'static str,
    },
    #[error("Dockerfile has no FROM instruction")]
    NoFrom,
    #[error("Dockerfile line {line}: bad variable substitution in {text:?}: {reason}")]
    Substitution {
        line: usize,
        text: String,
        reason: String,
    },
}

impl DockerfileError {
    /// Every Dockerfile error is the user's input being invalid.
    pub fn category(&self) -> crate::error::Category {
        crate::error::Category::Invalid
    }
}

fn invalid(line: usize, instruction: &'static str, reason: impl Into<String>) -> DockerfileError {
    DockerfileError::Invalid {
        line,
        instruction,
        reason: reason.into(),
    }
}

/// A command in shell form (run through the SHELL) or exec form (argv as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

/// A HEALTHCHECK: NONE, or a command with its options (durations as written, e.g. "30s").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    None,
    Check {
        command: Command,
        options: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run(Command),
    Cmd(Command),
    Entrypoint(Command),
    /// Key/value pairs, in order.
    Env(Vec<(String, String)>),
    Arg {
        name: String,
        default: Option<String>,
    },
    Workdir(String),
    User(String),
    /// COPY and ADD: sources, destination, and flags.
    Copy {
        add: bool,
        sources: Vec<String>,
        dest: String,
        from: Option<String>,
        chown: Option<String>,
        chmod: Option<String>,
    },
    Expose(Vec<String>),
    Label(Vec<(String, String)>),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    Shell(Vec<String>),
}

impl Instruction {
    /// The keyword, as `docker build` prints it.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Env(_) => "ENV",
            Instruction::Arg { .. } => "ARG",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Copy { add: true, .. } => "ADD",
            Instruction::Copy { add: false, .. } => "COPY",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Label(_) => "LABEL",
            Instruction::Volume(_) => "VOLUME",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
        }
    }
}

/// One instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line of the instruction's first line.
    pub line: usize,
    /// The instruction as written (continuations joined), for progress output and cache keys.
    pub text: String,
    pub instruction: Instruction,
}

/// A build stage: `FROM base [AS name]` and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub line: usize,
    /// The base image reference as written (may contain `$ARG`s declared before FROM).
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub steps: Vec<Step>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// ARGs declared before the first FROM (usable in FROM lines).
    pub global_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
    /// Parser directives and other things that were accepted but ignored.
    pub warnings: Vec<String>,
}

/// Logical lines: (first physical line number, text) with continuations joined and
/// comments and blank lines dropped.
fn logical_lines(src: &str, warnings: &mut Vec<String>) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    let mut directives_allowed = true;
    for (i, raw) in src.lines().enumerate() {
        let n = i + 1;
        let trimmed = raw.trim();
        if directives_allowed && cur.is_none() {
            if let Some(d) = trimmed.strip_prefix('#') {
                if let Some((k, v)) = d.trim().split_once('=') {
                    let k = k.trim().to_ascii_lowercase();
                    if k == "syntax" || k == "escape" || k == "check" {
                        warnings.push(format!(
                            "line {n}: parser directive {k}={} is not supported and was ignored",
                            v.trim()
                        ));
                        continue;
                    }
                }
            }
        }
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            directives_allowed = false;
        }
        // Comment lines are dropped even inside a continuation, as Docker does.
        if trimmed.starts_with('#') || (trimmed.is_empty() && cur.is_none()) {
            if !trimmed.starts_with('#') {
                directives_allowed = false;
            }
            continue;
        }
        let (body, continues) = match raw.trim_end().strip_suffix('\\') {
            Some(b) => (b.to_string(), true),
            None => (raw.to_string(), false),
        };
        match &mut cur {
            Some((_, text)) => text.push_str(&body),
            None => cur = Some((n, body)),
        }
        if !continues {
            if let Some((l, t)) = cur.take() {
                out.push((l, t.trim().to_string()));
            }
        }
    }
    if let Some((l, t)) = cur.take() {
        let t = t.trim().to_string();
        if !t.is_empty() {
            out.push((l, t));
        }
    }
    out
}

/// Parse a Dockerfile.
pub fn parse(src: &str) -> Result<Dockerfile, DockerfileError> {
    let mut warnings = Vec::new();
    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for (line, text) in logical_lines(src, &mut warnings) {
        let (word, rest) = match text.find(char::is_whitespace) {
            Some(i) => (&text[..i], text[i..].trim()),
            None => (text.as_str(), ""),
        };
        let kw = word.to_ascii_uppercase();
        if kw == "FROM" {
            stages.push(parse_from(line, rest)?);
            continue;
        }
        let instruction = parse_instruction(line, &kw, word, rest, &mut warnings)?;
        match stages.last_mut() {
            Some(stage) => stage.steps.push(Step {
                line,
                text: text.clone(),
                instruction,
            }),
            None => match instruction {
                Instruction::Arg { name, default } => global_args.push((name, default)),
                other => {
                    return Err(DockerfileError::BeforeFrom {
                        line,
                        instruction: other.keyword(),
                    })
                }
            },
        }
    }
    if stages.is_empty() {
        return Err(DockerfileError::NoFrom);
    }
    Ok(Dockerfile {
        global_args,
        stages,
        warnings,
    })
}

fn parse_from(line: usize, rest: &str) -> Result<Stage, DockerfileError> {
    let (flags, words) = split_flags(line, "FROM", rest)?;
    let mut platform = None;
    for (k, v) in flags {
        match k.as_str() {
            "platform" => platform = Some(v),
            _ => return Err(invalid(line, "FROM", format!("unknown flag --{k}"))),
        }
    }
    match words.as_slice() {
        [base] => Ok(Stage {
            line,
            base: base.clone(),
            name: None,
            platform,
            steps: Vec::new(),
        }),
        [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(invalid(
                    line,
                    "FROM",
                    format!("invalid stage name {name:?}"),
                ));
            }
            Ok(Stage {
                line,
                base: base.clone(),
                name: Some(name.to_ascii_lowercase()),
                platform,
                steps: Vec::new(),
            })
        }
        _ => Err(invalid(
            line,
            "FROM",
            "expected FROM [--platform=P] IMAGE [AS NAME]",
        )),
    }
}

/// `--key=value` flags of an instruction, in order.
type Flags = Vec<(String, String)>;

/// Leading `--key=value` flags, then the remaining whitespace-separated words.
fn split_flags(
    line: usize,
    instruction: &'static str,
    rest: &str,
) -> Result<(Flags, Vec<String>), DockerfileError> {
    let mut flags = Vec::new();
    let mut words = Vec::new();
    let mut in_flags = true;
    for w in rest.split_whitespace() {
        if in_flags {
            if let Some(f) = w.strip_prefix("--") {
                let Some((k, v)) = f.split_once('=') else {
                    return Err(invalid(
                        line,
                        instruction,
                        format!("flag --{f} needs a value (--{f}=VALUE)"),
                    ));
                };
                flags.push((k.to_string(), v.to_string()));
                continue;
            }
            in_flags = false;
        }
        words.push(w.to_string());
    }
    Ok((flags, words))
}

/// Leading flags of an instruction whose remainder may be JSON (COPY, ADD, HEALTHCHECK).
fn take_flags(rest: &str) -> (Vec<(String, Option<String>)>, &str) {
    let mut flags = Vec::new();
    let mut r = rest.trim_start();
    while let Some(f) = r.strip_prefix("--") {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let word = &f[..end];
        match word.split_once('=') {
            Some((k, v)) => flags.push((k.to_string(), Some(v.to_string()))),
            None => flags.push((word.to_string(), None)),
        }
        r = f[end..].trim_start();
    }
    (flags, r)
}

/// A JSON array of strings, if `rest` is one.
fn json_array(rest: &str) -> Option<Vec<String>> {
    let t = rest.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

fn command(rest: &str) -> Command {
    match json_array(rest) {
        Some(v) => Command::Exec(v),
        None => Command::Shell(rest.to_string()),
    }
}

/// `k=v k2="v 2"` pairs (quotes and backslash escapes understood), or the legacy
/// single `KEY value with spaces` form when `legacy` is allowed.
fn key_values(
    line: usize,
    instruction: &'static str,
    rest: &str,
    legacy: bool,
) -> Result<Vec<(String, String)>, DockerfileError> {
    let words = shell_words(rest).map_err(|e| invalid(line, instruction, e))?;
    if words.is_empty() {
        return Err(invalid(line, instruction, "needs at least one KEY=VALUE"));
    }
    if !words[0].contains('=') {
        if !legacy {
            return Err(invalid(
                line,
                instruction,
                format!("{:?} is not KEY=VALUE", words[0]),
            ));
        }
        // ENV KEY value...: the rest of the line, as written, is the value.
        let mut it = rest.trim().splitn(2, char::is_whitespace);
        let key = it.next().unwrap_or_default().to_string();
        let value = it.next().unwrap_or_default().trim().to_string();
        return Ok(vec![(key, value)]);
    }
    words
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(invalid(
                line,
                instruction,
                format!("{w:?} is not KEY=VALUE"),
            )),
        })
        .collect()
}

/// Split on whitespace honouring single and double quotes and backslash escapes; quotes
/// are removed, `$` references are kept for `expand`.
fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(x) => {
                        if x == '$' {
                            cur.push('\\');
                        }
                        cur.push(x)
                    }
                    None => cur.push('\\'),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn parse_instruction(
    line: usize,
    kw: &str,
    word: &str,
    rest: &str,
    warnings: &mut Vec<String>,
) -> Result<Instruction, DockerfileError> {
    let need = |name: &'static str| -> Result<(), DockerfileError> {
        if rest.is_empty() {
            Err(invalid(line, name, "needs an argument"))
        } else {
            Ok(())
        }
    };
    Ok(match kw {
        "RUN" => {
            let (flags, r) = take_flags(rest);
            for (k, _) in flags {
                warnings.push(format!(
                    "line {line}: RUN --{k} is not supported and was ignored"
                ));
            }
            if r.is_empty() {
                return Err(invalid(line, "RUN", "needs a command"));
            }
            Instruction::Run(command(r))
        }
        "CMD" => {
            need("CMD")?;
            Instruction::Cmd(command(rest))
        }
        "ENTRYPOINT" => {
            need("ENTRYPOINT")?;
            Instruction::Entrypoint(command(rest))
        }
        "ENV" => Instruction::Env(key_values(line, "ENV", rest, true)?),
        "LABEL" => Instruction::Label(key_values(line, "LABEL", rest, false)?),
        "MAINTAINER" => {
            need("MAINTAINER")?;
            Instruction::Label(vec![("maintainer".into(), rest.to_string())])
        }
        "ARG" => {
            need("ARG")?;
            let words = shell_words(rest).map_err(|e| invalid(line, "ARG", e))?;
            let [w] = words.as_slice() else {
                return Err(invalid(line, "ARG", "expected ARG NAME[=DEFAULT]"));
            };
            match w.split_once('=') {
                Some((k, v)) => Instruction::Arg {
                    name: k.to_string(),
                    default: Some(v.to_string()),
                },
                None => Instruction::Arg {
                    name: w.clone(),
                    default: None,
                },
            }
        }
        "WORKDIR" => {
            need("WORKDIR")?;
            Instruction::Workdir(rest.to_string())
        }
        "USER" => {
            need("USER")?;
            Instruction::User(rest.to_string())
        }
        "COPY" | "ADD" => {
            let add = kw == "ADD";
            let name = if add { "ADD" } else { "COPY" };
            let (flags, r) = take_flags(rest);
            let (mut from, mut chown, mut chmod) = (None, None, None);
            for (k, v) in flags {
                let v =
                    v.ok_or_else(|| invalid(line, name, format!("flag --{k} needs a value")))?;
                match k.as_str() {
                    "from" if !add => from = Some(v),
                    "chown" => chown = Some(v),
                    "chmod" => chmod = Some(v),
                    "link" => warnings.push(format!(
                        "line {line}: {name} --link is not supported and was ignored"
                    )),
                    _ => return Err(invalid(line, name, format!("unknown flag --{k}"))),
                }
            }
            let mut paths = match json_array(r) {
                Some(v) => v,
                None => shell_words(r).map_err(|e| invalid(line, name, e))?,
            };
            if paths.len() < 2 {
                return Err(invalid(
                    line,
                    name,
                    "needs at least one source and a destination",
                ));
            }
            let dest = paths.pop().unwrap_or_default();
            Instruction::Copy {
                add,
                sources: paths,
                dest,
                from,
                chown,
                chmod,
            }
        }
        "EXPOSE" => {
            need("EXPOSE")?;
            Instruction::Expose(rest.split_whitespace().map(String::from).collect())
        }
        "VOLUME" => {
            need("VOLUME")?;
            Instruction::Volume(match json_array(rest) {
                Some(v) => v,
                None => rest.split_whitespace().map(String::from).collect(),
            })
        }
        "STOPSIGNAL" => {
            need("STOPSIGNAL")?;
            Instruction::StopSignal(rest.to_string())
        }
        "SHELL" => match json_array(rest) {
            Some(v) if !v.is_empty() => Instruction::Shell(v),
            _ => {
                return Err(invalid(
                    line,
                    "SHELL",
                    "needs a JSON array, e.g. SHELL [\"/bin/sh\", \"-c\"]",
                ))
            }
        },
        "HEALTHCHECK" => {
            let (flags, r) = take_flags(rest);
            if r.eq_ignore_ascii_case("none") {
                Instruction::Healthcheck(Healthcheck::None)
            } else {
                let (cmd_word, cmd_rest) = match r.find(char::is_whitespace) {
                    Some(i) => (&r[..i], r[i..].trim()),
                    None => (r, ""),
                };
                if !cmd_word.eq_ignore_ascii_case("cmd") || cmd_rest.is_empty() {
                    return Err(invalid(
                        line,
                        "HEALTHCHECK",
                        "expected HEALTHCHECK [OPTIONS] CMD command, or NONE",
                    ));
                }
                let mut options = Vec::new();
                for (k, v) in flags {
                    match k.as_str() {
                        "interval" | "timeout" | "start-period" | "start-interval" | "retries" => {
                            let v = v.ok_or_else(|| {
                                invalid(line, "HEALTHCHECK", format!("--{k} needs a value"))
                            })?;
                            options.push((k, v));
                        }
                        _ => {
                            return Err(invalid(line, "HEALTHCHECK", format!("unknown flag --{k}")))
                        }
                    }
                }
                Instruction::Healthcheck(Healthcheck::Check {
                    command: command(cmd_rest),
                    options,
                })
            }
        }
        "ONBUILD" => return Err(invalid(line, "ONBUILD", "is not supported yet")),
        _ => {
            return Err(DockerfileError::UnknownInstruction {
                line,
                word: word.to_string(),
            })
        }
    })
}

/// Expand `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alternative}` from `vars`, as
/// Docker does for ENV, ARG, COPY, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL and FROM.
/// `\$` stays a literal `$`; unknown variables expand to the empty string.
pub fn expand(
    line: usize,
    text: &str,
    vars: &HashMap<String, String>,
) -> Result<String, DockerfileError> {
    let err = |reason: &str| DockerfileError::Substitution {
        line,
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('{') => {
                let Some(end) = chars[i + 2..].iter().position(|&c| c == '}') else {
                    return Err(err("missing '}'"));
                };
                let inner: String = chars[i + 2..i + 2 + end].iter().collect();
                i += 3 + end;
                let (name, op) = match inner.find(':') {
                    Some(p) => (&inner[..p], Some(&inner[p + 1..])),
                    None => (inner.as_str(), None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(err("invalid variable name"));
                }
                let val = vars.get(name).filter(|v| !v.is_empty());
                match op {
                    None => out.push_str(vars.get(name).map(String::as_str).unwrap_or("")),
                    Some(o) if o.starts_with('-') => match val {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&o[1..]),
                    },
                    Some(o) if o.starts_with('+') => {
                        if val.is_some() {
                            out.push_str(&o[1..]);
                        }
                    }
                    Some(_) => {
                        return Err(err(
                            "only ${VAR:-default} and ${VAR:+alternative} are supported",
                        ))
                    }
                }
            }
            Some(n) if n.is_ascii_alphabetic() || *n == '_' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_steps_and_line_numbers() {
        let src = "# syntax=docker/dockerfile:1\n\
                   ARG BASE=scratch\n\
                   FROM $BASE AS build\n\
                   # a comment\n\
                   RUN echo one \\\n\
                       && echo two\n\
                   \n\
                   FROM build\n\
                   COPY --from=build --chown=1:1 /a /b /dest/\n\
                   CMD [\"/bin/app\", \"--flag\"]\n";
        let d = parse(src).unwrap();
        assert_eq!(
            d.global_args,
            vec![("BASE".to_string(), Some("scratch".to_string()))]
        );
        assert_eq!(d.stages.len(), 2);
        assert_eq!(d.stages[0].name.as_deref(), Some("build"));
        assert_eq!(d.stages[0].base, "$BASE");
        let run = &d.stages[0].steps[0];
        assert_eq!(run.line, 5);
        assert_eq!(
            run.instruction,
            Instruction::Run(Command::Shell("echo one && echo two".into()))
        );
        let s1 = &d.stages[1];
        assert_eq!(s1.line, 8);
        assert_eq!(
            s1.steps[0].instruction,
            Instruction::Copy {
                add: false,
                sources: vec!["/a".into(), "/b".into()],
                dest: "/dest/".into(),
                from: Some("build".into()),
                chown: Some("1:1".into()),
                chmod: None,
            }
        );
        assert_eq!(
            s1.steps[1].instruction,
            Instruction::Cmd(Command::Exec(vec!["/bin/app".into(), "--flag".into()]))
        );
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    }

    #[test]
    fn env_label_and_arg_forms() {
        let d = parse("FROM scratch\nENV A=1 B=\"two words\" C=x\\ y\nENV LEGACY some value here\nLABEL \"k\"=\"v\" x=y\nARG V\nARG W=d\n").unwrap();
        let steps: Vec<_> = d.stages[0]
            .steps
            .iter()
            .map(|s| s.instruction.clone())
            .collect();
        assert_eq!(
            steps[0],
            Instruction::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x y".into())
            ])
        );
        assert_eq!(
            steps[1],
            Instruction::Env(vec![("LEGACY".into(), "some value here".into())])
        );
        assert_eq!(
            steps[2],
            Instruction::Label(vec![("k".into(), "v".into()), ("x".into(), "y".into())])
        );
        assert_eq!(
            steps[3],
            Instruction::Arg {
                name: "V".into(),
                default: None
            }
        );
        assert_eq!(
            steps[4],
            Instruction::Arg {
                name: "W".into(),
                default: Some("d".into())
            }
        );
    }

    #[test]
    fn other_instructions() {
        let d = parse(
            "FROM scratch\nWORKDIR /app\nUSER 1000:1000\nEXPOSE 8080/tcp 53/udp\nVOLUME [\"/data\"]\n\
             STOPSIGNAL SIGINT\nHEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost\n\
             HEALTHCHECK NONE\nSHELL [\"/bin/ash\", \"-c\"]\nADD files.tar /\nMAINTAINER me\n",
        )
        .unwrap();
        let kws: Vec<&str> = d.stages[0]
            .steps
            .iter()
            .map(|s| s.instruction.keyword())
            .collect();
        assert_eq!(
            kws,
            [
                "WORKDIR",
                "USER",
                "EXPOSE",
                "VOLUME",
                "STOPSIGNAL",
                "HEALTHCHECK",
                "HEALTHCHECK",
                "SHELL",
                "ADD",
                "LABEL"
            ]
        );
        assert_eq!(
            d.stages[0].steps[5].instruction,
            Instruction::Healthcheck(Healthcheck::Check {
                command: Command::Shell("wget -q localhost".into()),
                options: vec![
                    ("interval".into(), "5s".into()),
                    ("retries".into(), "3".into())
                ],
            })
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("FROM scratch\nRUN true\nFROBNICATE x\n").unwrap_err(),
            DockerfileError::UnknownInstruction {
                line: 3,
                word: "FROBNICATE".into()
            }
        );
        assert_eq!(
            parse("RUN true\n").unwrap_err(),
            DockerfileError::BeforeFrom {
                line: 1,
                instruction: "RUN"
            }
        );
        assert_eq!(
            parse("# only a comment\n").unwrap_err(),
            DockerfileError::NoFrom
        );
        assert!(matches!(
            parse("FROM scratch\nCOPY onlyone\n"),
            Err(DockerfileError::Invalid { line: 2, .. })
        ));
        assert!(matches!(
            parse("FROM a b c d\n"),
            Err(DockerfileError::Invalid { line: 1, .. })
        ));
        assert!(matches!(
            parse("FROM scratch\nSHELL /bin/sh\n"),
            Err(DockerfileError::Invalid { line: 2, .. })
        ));
        let e = parse("FROM scratch\nENV A=\"open\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn variable_expansion() {
        let vars: HashMap<String, String> = [
            ("A".to_string(), "x".to_string()),
            ("E".to_string(), String::new()),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            expand(1, "$A/${A}/${B:-def}/${A:+alt}/${E:-empty}/\\$A/$", &vars).unwrap(),
            "x/x/def/alt/empty/$A/$"
        );
        assert_eq!(expand(1, "${MISSING}${A}", &vars).unwrap(), "x");
        assert!(expand(1, "${A", &vars).is_err());
        assert!(expand(1, "${A:?err}", &vars).is_err());
    }
}
