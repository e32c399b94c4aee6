//! What a person at a terminal sees (issue 24, item 5): on a terminal that
//! cannot draw a spinner (`TERM=dumb`) every event as a plain line; on one
//! that can, a spinner line that follows the run's state (never the status
//! of a step that ended), with elapsed time and time left for every step,
//! and no colour. `script` gives reimage a pseudo-terminal for stderr.

use crate::common::{self, LIMIT, Scratch};
use crate::test::{Output, run};
use testbed::port;

/// A command load that takes a second, then a post-load whose sleep step
/// passes and whose port step times out, with a power reset that fails
/// (a warning) before the step gives up.
fn setup(name: &str) -> Scratch {
    let s = Scratch::new(name);
    let load = s.script("load.sh", "#!/bin/sh\nsleep 1\nexit 0\n");
    let reset = s.script(
        "reset.sh",
        "#!/bin/sh\necho 'no power switch here' >&2\nexit 1\n",
    );
    let closed = port::closed();
    s.config(&format!(
        r#"
[provisioners.script]
kind = "command"
load = ["{load}"]
power_reset = ["{reset}"]
timeout = "20s"

[os.appliance]
family = "generic"
channel = "none"
steps = [
    {{ wait = "sleep", name = "settle", duration = "1s" }},
    {{ wait = "port", port = {closed}, timeout = "1s", reset_on_timeout = "1s" }},
]

[images.img]
os = "appliance"
provisioner = "script"
source = "img-src"

[computers.pc7]
address = "127.0.0.1"
node = "pc7-bmc"
"#,
        load = load.display(),
        reset = reset.display()
    ));
    s
}

/// `reimage provision` on a pseudo-terminal whose TERM is `term`.
fn on_terminal(s: &Scratch, term: &str, attempts: &str) -> Output {
    let line = format!(
        "{} --config {} provision pc7 --image img --attempts {attempts}",
        common::bin().display(),
        s.path("reimage.toml").display()
    );
    run(
        std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("TERM", term),
        LIMIT,
    )
}

/// The events the screen shows at the default verbosity, from the event
/// log: each one's message (its first line).
fn shown(s: &Scratch) -> Vec<String> {
    s.events("pc7")
        .iter()
        .filter(|e| !matches!(e["kind"].as_str(), Some("start" | "progress" | "output")))
        .filter_map(|e| e["message"].as_str())
        .map(|m| m.lines().next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_dumb_terminal_gets_every_event_as_a_line() {
    let s = setup("term-dumb");
    let r = on_terminal(&s, "dumb", "1");
    r.code(1);
    let screen = &r.stdout;
    let want = shown(&s);
    assert!(want.len() >= 12, "{want:?}");
    for m in &want {
        assert!(
            screen.contains(m.as_str()),
            "not on the screen: {m:?}\n{screen}"
        );
    }
    // The warning and the reason it failed, each on a line of its own.
    let line = |needle: &str| {
        screen
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{screen}"))
            .to_string()
    };
    assert!(
        line("power reset failed").contains("post-load: warning: power reset failed"),
        "{screen}"
    );
    assert!(
        line("no attempts left").contains("post-load: fatal: "),
        "{screen}"
    );
    // Plain lines: no cursor movement, no spinner, no doubled prefix.
    assert!(
        !screen.contains('\x1b'),
        "escapes on a dumb terminal:\n{screen:?}"
    );
    assert!(!screen.contains("left)"), "{screen}");
    for doubled in ["load: load", "post-load: post-load", "load load"] {
        assert!(!screen.contains(doubled), "{doubled:?} in:\n{screen}");
    }
    assert!(screen.contains("pc7 [1/1]: load starts"), "{screen}");
    assert!(screen.contains("pc7 [1/1] load: ok after"), "{screen}");
    assert!(screen.contains("pc7 [1/1]: load: running `"), "{screen}");
}

#[test]
fn the_spinner_line_follows_the_run() {
    let s = setup("term-tty");
    let r = on_terminal(&s, "xterm-256color", "2");
    r.code(1);
    let screen = &r.stdout;
    // The lines above the spinner: every event, a warning included.
    for m in shown(&s) {
        assert!(
            screen.contains(m.as_str()),
            "not on the screen: {m:?}\n{screen}"
        );
    }
    // Each redraw starts at the line's beginning; the spinner's frames are
    // those that start with a spinner character.
    let frames: Vec<&str> = screen
        .split('\r')
        .map(|f| f.trim_start_matches("\x1b[2K").trim_end())
        .filter(|f| f.starts_with(|c: char| ('\u{2800}'..='\u{28ff}').contains(&c)))
        .collect();
    assert!(frames.len() > 10, "{screen:?}");
    let matching = |re: &str| {
        let re = regex::Regex::new(re).expect("regex");
        frames.iter().any(|f| re.is_match(f))
    };
    // Every step shows its elapsed time and the time left, a command
    // load included.
    for re in [
        r"\[1/2\] pc7 load 0:0\d \(≤0:[12]\d left\)$",
        r"\[2/2\] pc7 load 0:0\d \(≤0:[1-3]\d left\)$",
        r"\[1/2\] pc7 post-load · settle 0:0\d \(≤0:0[01] left\)",
        r"\[1/2\] pc7 post-load · port 0:0\d \(≤0:0[01] left\) · port \d+: connection refused$",
    ] {
        assert!(matching(re), "no frame like {re}:\n{frames:#?}");
    }
    // What a step saw goes with it: never beside another step or phase.
    for f in &frames {
        if f.contains("sleeping") {
            assert!(f.contains("· settle "), "{f}");
        }
        if f.contains("refused") {
            assert!(f.contains("post-load · port "), "{f}");
        }
    }
    // No colour (so nothing for NO_COLOR to turn off).
    let sgr = regex::Regex::new(r"\x1b\[[0-9;]*m").expect("regex");
    assert!(!sgr.is_match(screen), "{screen:?}");
}

/// Issue 24.6: the bash script `reimage completions bash` prints, loaded
/// as bash-completion loads it, completes subcommands, options, and the
/// computer and image names of the config the command line names.
#[test]
fn bash_completes_computer_and_image_names_from_the_config() {
    let s = setup("term-complete");
    std::fs::write(
        s.path("reimage.toml"),
        std::fs::read_to_string(s.path("reimage.toml")).expect("config")
            + r#"
[images.rocky9]
os = "appliance"
provisioner = "script"
source = "rocky9"

[computers.node-b]
address = "127.0.0.2"
"#,
    )
    .expect("config");
    let script = crate::test::Test::with(&s)
        .args(&["completions", "bash"])
        .run();
    script.code(0);
    s.write("reimage.bash", &script.stdout);
    // A file that starts like an image name: --image never offers files.
    s.write("rocky-notes.txt", "");
    let bin_dir = common::bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Each line of `cases`: the words typed, the last one being completed.
    let cases = [
        "reimage prov",
        "reimage --config reimage.toml provision ''",
        "reimage --config reimage.toml provision node",
        "reimage --config=reimage.toml load pc7 --image ''",
        "reimage --config reimage.toml check pc7 --image r",
        "reimage log --config reimage.toml p",
    ];
    let driver = format!(
        r#"source ./reimage.bash
fn=$(complete -p reimage | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
[ -n "$fn" ] || {{ echo "no completion registered"; exit 1; }}
ask() {{
    COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
    COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}; COMP_TYPE=9; COMPREPLY=()
    "$fn" reimage "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
    printf '%s\n' "$*: $(printf '%s ' "${{COMPREPLY[@]}}")"
}}
{}
"#,
        cases
            .iter()
            .map(|c| format!("ask {c}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let r = run(
        std::process::Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &driver])
            .current_dir(s.path(""))
            .env("PATH", path)
            .env_remove("REIMAGE_CONFIG"),
        LIMIT,
    );
    r.code(0);
    let answer = |typed: &str| {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{typed}: ")))
            .unwrap_or_else(|| panic!("no answer for {typed:?}:\n{}", r.stdout))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(answer("reimage prov"), ["provision"]);
    let after_provision = answer("reimage --config reimage.toml provision ");
    assert!(
        after_provision.starts_with(&["pc7", "node-b"])
            || after_provision.starts_with(&["node-b", "pc7"]),
        "{after_provision:?}"
    );
    assert!(after_provision.contains(&"--image"), "{after_provision:?}");
    assert_eq!(
        answer("reimage --config reimage.toml provision node"),
        ["node-b"]
    );
    let mut images = answer("reimage --config=reimage.toml load pc7 --image ");
    images.sort();
    assert_eq!(images, ["img", "rocky9"]);
    assert_eq!(
        answer("reimage --config reimage.toml check pc7 --image r"),
        ["rocky9"]
    );
    assert_eq!(answer("reimage log --config reimage.toml p"), ["pc7"]);
}
