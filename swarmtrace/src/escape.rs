//! Strings from outside the process (the kernel, `/proc`, Docker, a bundle from another host,
//! another user's process or interface name) made safe for the place they are printed:
//!
//! - a terminal ([`terminal`]): control characters (C0 with ESC, BEL, CR, LF and TAB; DEL;
//!   C1, whose U+009B is a CSI of its own) and the invisible characters that reorder or hide
//!   text (bidi overrides and isolates, zero-width characters) are shown as escapes (`\x1b`,
//!   `\u{9b}`), so a name can neither send sequences to the operator's terminal nor fake a
//!   line of output;
//! - a shell ([`shell_word`]): every word interpolated into a command swarmtrace suggests is
//!   quoted POSIX-style unless it is made of characters no shell treats specially;
//! - markdown ([`markdown`], [`code_span`], [`fence`]): a name renders as the text it is.
//!
//! JSON needs none of this: serde escapes what JSON must and keeps the exact value.
//!
//! Names made only of printable ASCII come out unchanged (and unallocated), so ordinary
//! output is the same as without escaping. A backslash is left as it is: it is harmless on a
//! terminal, and output such as `grep '\.rp_filter'` stays readable.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether a character must not reach a terminal as it is.
fn unsafe_char(c: char) -> bool {
    matches!(c,
        // C0 (ESC, BEL, CR, LF, TAB, ...), DEL and C1 (U+009B is a CSI).
        '\0'..='\x1f' | '\x7f'..='\u{9f}'
        // Arabic letter mark; zero-width space, joiners, LRM, RLM.
        | '\u{61c}' | '\u{200b}'..='\u{200f}'
        // Line and paragraph separators; embeddings and overrides (LRE, RLE, PDF, LRO, RLO).
        | '\u{2028}'..='\u{202e}'
        // Word joiner and invisible operators; isolates (LRI, RLI, FSI, PDI); deprecated
        // format characters.
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}'
        // Byte order mark; interlinear annotations.
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0'..='\x1f' | '\x7f' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        _ => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `s` for a terminal: control and invisible characters escaped, the rest unchanged.
pub fn terminal(s: &str) -> Cow<'_, str> {
    // Fast path: printable ASCII (what nearly every name is) needs nothing.
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bytes that may not be UTF-8 (an interface name, a process name) for a terminal: as
/// [`terminal`], each byte that is not part of valid UTF-8 shown as `\xNN`.
pub fn terminal_bytes(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return terminal(s);
    }
    let mut out = String::with_capacity(b.len() + 8);
    for chunk in b.utf8_chunks() {
        out.push_str(&terminal(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    Cow::Owned(out)
}

/// Characters no POSIX shell gives a meaning to inside a word.
fn shell_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b)
}

/// One word of a shell command: unchanged when every character is inert (`st1-task1`,
/// `/var/run/docker/netns/1-abc`), else single-quoted, a `'` inside written `'\''`. The shell
/// reads it back as exactly `s`, whatever `s` holds (`$(...)`, backticks, newlines).
pub fn shell_word(s: &str) -> Cow<'_, str> {
    if !s.is_empty() && s.bytes().all(shell_safe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

/// Words joined into one shell command line, each quoted by [`shell_word`].
pub fn shell_words<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(shell_word)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Characters markdown (CommonMark with GitHub's tables) may read as markup.
fn markdown_special(c: char) -> bool {
    matches!(
        c,
        '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '&' | '~'
    )
}

/// Whether the character at `i` of `chars` needs a backslash. An `_` between two letters or
/// digits (`NO_SOCKET`, `tcp_v4_rcv`) can neither open nor close emphasis in CommonMark, and
/// stays as it is.
fn markdown_escapes(chars: &[char], i: usize) -> bool {
    let c = chars[i];
    if c == '_' {
        let alnum = |j: Option<usize>| {
            j.and_then(|j| chars.get(j))
                .is_some_and(|c| c.is_alphanumeric())
        };
        return !(alnum(i.checked_sub(1)) && alnum(Some(i + 1)));
    }
    markdown_special(c)
}

/// `s` as markdown text (in a paragraph, a list item or a table cell): terminal-escaped (a
/// report is read on terminals too, and a newline would end the line or the table row), then
/// every character markdown could read as markup backslash-escaped, so that it renders as
/// the text it is: no emphasis, link, HTML, heading, code span or table cell of its own.
pub fn markdown(s: &str) -> Cow<'_, str> {
    let t = terminal(s);
    let chars: Vec<char> = t.chars().collect();
    if !(0..chars.len()).any(|i| markdown_escapes(&chars, i)) {
        return t;
    }
    let mut out = String::with_capacity(t.len() + 8);
    for (i, c) in chars.iter().enumerate() {
        if markdown_escapes(&chars, i) {
            out.push('\\');
        }
        out.push(*c);
    }
    Cow::Owned(out)
}

/// The longest run of backticks in `s`.
fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// `s` as an inline code span: terminal-escaped, between backtick runs longer than any run
/// inside it (padded with a space where `s` starts or ends with a backtick), so it cannot
/// close early. Not for table cells (GitHub splits cells at `|` even inside code): use
/// [`markdown`] there.
pub fn code_span(s: &str) -> String {
    let t = terminal(s);
    let ticks = "`".repeat(longest_backtick_run(&t) + 1);
    let pad = if t.starts_with('`') || t.ends_with('`') || t.is_empty() {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{t}{pad}{ticks}")
}

/// The fence for a code block holding `s` (already terminal-escaped, one or more lines): at
/// least three backticks, and more than any run of backticks in `s`, so no line of it closes
/// the block.
pub fn fence(s: &str) -> String {
    "`".repeat((longest_backtick_run(s) + 1).max(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\x1b]0;pwn\x07\x1b[31mX";

    #[test]
    fn plain_names_are_unchanged_and_borrowed() {
        for s in [
            "",
            "host",
            "pid:42(nginx)",
            "container web.1.x3 (service web) [8c1e2f3a4b5c]",
            "netns:4026532300",
            "grep '\\.rp_filter'",
            "café ünïcode 名前",
        ] {
            assert!(matches!(terminal(s), Cow::Borrowed(x) if x == s), "{s}");
        }
    }

    #[test]
    fn controls_and_reorderers_are_escaped_visibly() {
        assert_eq!(terminal(HOSTILE), "\\x1b]0;pwn\\x07\\x1b[31mX");
        assert_eq!(terminal("a\nb\r\tc\x7f\0"), "a\\nb\\r\\tc\\x7f\\x00");
        assert_eq!(terminal("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(terminal("\u{85}"), "\\u{85}");
        assert_eq!(terminal("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
        assert_eq!(
            terminal("\u{2066}x\u{2069}\u{200b}\u{feff}"),
            "\\u{2066}x\\u{2069}\\u{200b}\\u{feff}"
        );
        // Nothing that reaches a terminal is a control or C1 byte.
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let out = terminal(&all);
        assert!(!out.chars().any(|c| c.is_control()));
        assert!(!out.bytes().any(|b| b == 0x1b));
        assert!(!out
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == 0xc2 && (0x80..0xa0).contains(&w[1])));
    }

    #[test]
    fn invalid_utf8_is_shown_byte_by_byte() {
        assert_eq!(terminal_bytes(b"eth0"), "eth0");
        assert_eq!(terminal_bytes(b"a\xffb\x1b\xc2"), "a\\xffb\\x1b\\xc2");
        assert_eq!(terminal_bytes("\u{9b}".as_bytes()), "\\u{9b}");
    }

    /// What a POSIX shell reads the words back as, through `sh` itself.
    fn sh_split(cmd: &str) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!("swarmtrace-escape-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("sh")
            .current_dir(&dir)
            .args(["-c", "eval \"set -- $1\"; printf '%s\\0' \"$@\"", "sh", cmd])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {out:?}");
        let pwned = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(pwned, 0, "{cmd} ran something");
        let mut words: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split('\0')
            .map(str::to_owned)
            .collect();
        words.pop();
        words
    }

    #[test]
    fn shell_words_read_back_exactly() {
        assert_eq!(shell_word("st1-task1"), "st1-task1");
        assert_eq!(
            shell_word("/var/run/docker/netns/1-abc"),
            "/var/run/docker/netns/1-abc"
        );
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        let words = [
            "ip",
            "netns",
            "exec",
            "$(touch pwned)`touch pwned2`;touch pwned3 # x",
            HOSTILE,
            "a\nb",
            "\u{9b}2J",
            "'\"\\",
            "*",
            "~",
            "",
            "-ltn",
        ];
        let cmd = shell_words(words);
        assert_eq!(sh_split(&cmd), words);
    }

    #[test]
    fn markdown_renders_names_as_text() {
        assert_eq!(markdown("web.1.x3"), "web.1.x3");
        assert_eq!(
            markdown("SYN NO_SOCKET at tcp_v4_rcv in docker_gwbridge"),
            "SYN NO_SOCKET at tcp_v4_rcv in docker_gwbridge"
        );
        assert_eq!(markdown("_a_ b_ _c"), "\\_a\\_ b\\_ \\_c");
        assert_eq!(
            markdown("`x` *b* _i_ [l](u) <img> # | & ~ \\"),
            "\\`x\\` \\*b\\* \\_i\\_ \\[l\\](u) \\<img\\> \\# \\| \\& \\~ \\\\"
        );
        // Terminal escapes first; their backslash is then escaped for markdown.
        assert_eq!(markdown("a\nb\x1b"), "a\\\\nb\\\\x1b");
        assert_eq!(code_span("10.0.0.1:80"), "`10.0.0.1:80`");
        assert_eq!(code_span("a``b"), "```a``b```");
        assert_eq!(code_span("`x"), "`` `x ``");
        assert_eq!(fence("ip netns exec x ss -ltn"), "```");
        assert_eq!(fence("x ```` y"), "`````");
    }
}
