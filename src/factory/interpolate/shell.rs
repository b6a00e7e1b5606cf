//! A small parser of POSIX `sh` quoting, to know what a `%(name)s` reference in a
//! shell script stands in: a plain word, `"…"`, `'…'`, `$'…'`, `$(…)` or `` `…` ``
//! (which start a fresh plain context even inside double quotes), `${…}`,
//! arithmetic (`$((…))`, `((…))`, `$[…]`, an array subscript), a here-document
//! (quoted or not) or a comment — and whether that place is itself the script of
//! a nested shell (`sh -c '…'`, `bash -c "…"`, `eval …`, `sh <<EOF`), whose own
//! quoting is then tracked the same way, one level deeper.
//!
//! [`Tracker::reference`] answers with the text that expands the environment
//! variable holding the value *at the innermost level* — `"${V}"` in a plain word,
//! `${V}` inside double quotes or an unquoted here-document, `'"${V}"'` inside
//! single quotes — escaped for every enclosing level (`\"\${V}\"` inside the
//! double-quoted script of `sh -c "…"`), so the value is only ever the result of
//! a parameter expansion and never text any shell parses. Where that cannot be
//! done it refuses: arithmetic takes only a plain decimal integer (the shell
//! evaluates whatever it finds there as an expression, and bash runs `$(…)` in
//! array subscripts), a quoted here-document expands nothing, an expansion
//! inside a nested script's text would put its output in that script.
//!
//! Everything else in the script is just tracked: the parser never changes it.
//! Mistaking one quoting context for another at the top level can only change how
//! the value is split or globbed, never make it code, since every form is an
//! expansion; the levels and arithmetic are what keep it from being parsed again.

/// One character of the script, or something whose text is not known here (the
/// result of an expansion an enclosing shell makes, or a value put in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Ch(char),
    Unknown,
}

/// Why a reference cannot be put where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RefError {
    /// In arithmetic, and the value is not a plain decimal integer.
    NotAnInteger,
    /// The place cannot take a value at all; the text says why and what to do.
    Refused(String),
}

/// What ends a list of commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The end of the script (or of a nested script).
    End,
    /// `)`: a subshell `( … )` or a command substitution `$( … )`.
    Paren,
}

/// What a value's text would become at a place, beyond the shell's own quoting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taint {
    None,
    /// Arithmetic (the result of an expansion there is evaluated): integers only.
    Arith,
    /// Text of a nested shell's script: no value at all.
    Script,
}

/// What the next word of a command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Normal,
    /// After `<<` or `<<-`: a here-document's delimiter.
    Delim {
        strip: bool,
    },
    /// After `<<<` (bash, zsh): a here-string.
    HereString,
}

/// What a word is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Normal,
    /// The script of a nested shell: its text is tracked by a child level.
    Script,
    Delim {
        strip: bool,
    },
}

/// A word being read.
#[derive(Debug, Clone)]
struct Word {
    /// Its text after quote removal; `None` once an expansion is part of it.
    text: Option<String>,
    /// Whether any part was quoted (a quoted delimiter makes a literal
    /// here-document).
    quoted: bool,
    role: Role,
}

/// A here-document waiting for the end of its command's line.
#[derive(Debug, Clone)]
struct DocSpec {
    delim: Option<String>,
    quoted: bool,
    strip: bool,
    /// A shell reads it as its script (`sh <<EOF`).
    script: bool,
}

/// A list of commands.
#[derive(Debug, Clone)]
struct Cmd {
    close: Close,
    /// What the output of this list of commands becomes (a substitution inside
    /// arithmetic or inside a nested script's text).
    taint: Taint,
    /// Opened by `$(` or a backquote (its output is text of the enclosing word),
    /// not a subshell.
    subst: bool,
    /// The finished words of the current simple command (`None`: not known).
    words: Vec<Option<String>>,
    word: Option<Word>,
    next: Next,
    heredocs: Vec<DocSpec>,
    /// In a `[[ … ]]` command: the index of a word holding a reference whose value
    /// is not an integer, and its variable, in case an arithmetic operator
    /// (`-eq`, …) follows it.
    maybe_arith: Option<(usize, String)>,
    /// `case` commands open here: their patterns end with a `)` that closes
    /// nothing.
    cases: u32,
}

impl Cmd {
    fn new(close: Close, subst: bool, taint: Taint) -> Cmd {
        Cmd {
            close,
            taint,
            subst,
            words: Vec::new(),
            word: None,
            next: Next::Normal,
            heredocs: Vec::new(),
            maybe_arith: None,
            cases: 0,
        }
    }
}

/// Where `${…}` is in reading its parameter's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Start,
    Reading,
    Done,
}

/// A here-document body being read.
#[derive(Debug, Clone)]
struct Heredoc {
    spec: DocSpec,
    /// The current line as written.
    line: String,
    /// The current line has no expansion or reference (only such a line can be
    /// the delimiter).
    line_plain: bool,
}

#[derive(Debug, Clone)]
enum Frame {
    Cmd(Cmd),
    Double {
        arith: bool,
    },
    Single {
        arith: bool,
    },
    /// `$'…'` (bash, ksh, zsh, POSIX 2024).
    AnsiSingle,
    /// `` `…` ``: its text, once the backslashes before `$`, `` ` ``, `\` (and `"`
    /// inside double quotes) are removed, is a script a child level reads.
    Backtick {
        in_double: bool,
    },
    /// `${…}`; `quoted`: inside double quotes (or a here-document).
    Param {
        quoted: bool,
        arith: bool,
        name: Name,
    },
    /// `$((…))` / `((…))` (`close` is `)`), `$[…]` or a subscript (`]`);
    /// `subst`: its value is text of the enclosing word.
    Arith {
        depth: u32,
        close: char,
        subst: bool,
    },
    Heredoc(Heredoc),
    Comment,
}

impl Frame {
    fn is_quote(&self) -> bool {
        matches!(
            self,
            Frame::Double { .. } | Frame::Single { .. } | Frame::AnsiSingle
        )
    }

    fn arith(&self) -> bool {
        match self {
            Frame::Double { arith } | Frame::Single { arith } => *arith,
            Frame::Param { arith, .. } => *arith,
            Frame::Arith { .. } => true,
            _ => false,
        }
    }
}

/// A character that changes the meaning of the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Escape,
    Dollar,
    DollarParen,
    Lt,
    LtLt,
    /// `(` where a command starts: a subshell, or `((` arithmetic.
    Paren,
    /// The first `)` of the `))` that closes arithmetic.
    ArithClose,
}

/// One shell's view of a script.
#[derive(Debug, Clone)]
struct Level {
    frames: Vec<Frame>,
    pending: Pending,
    /// The scripts being read inside this one (a nested shell's, or a backquoted
    /// command's), innermost last, each with the index of the frame that holds
    /// it (a `Cmd` whose current word is the script, a `Heredoc` or a
    /// `Backtick`).
    children: Vec<(Box<Level>, usize)>,
    /// What a value written anywhere at this level would become in the levels
    /// around it.
    taint: Taint,
    /// Variables found in arithmetic after their reference was written (the left
    /// operand of `[[ A -eq B ]]`), whose values are not integers.
    deferred: Vec<String>,
}

/// Programs that run their `-c` argument, or a here-document on their stdin, as a
/// shell script.
pub(super) const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ksh", "ksh93", "mksh", "pdksh", "zsh", "ash", "yash", "posh",
];

/// Words that may stand before a command's name.
const RESERVED: &[&str] = &[
    "!", "if", "then", "else", "elif", "do", "while", "until", "{", "time", "command", "builtin",
    "exec",
];

fn is_shell(word: &Option<String>) -> bool {
    word.as_deref().is_some_and(|w| {
        let base = w.rsplit('/').next().unwrap_or(w);
        SHELLS.contains(&base)
    })
}

/// `-c`, or options with `c` among them (`-ec`, `-xc`, `-lc`).
fn is_c_flag(word: &Option<String>) -> bool {
    word.as_deref().is_some_and(|w| {
        w.len() >= 2
            && w.starts_with('-')
            && w[1..].chars().all(|c| c.is_ascii_alphabetic())
            && w[1..].contains('c')
    })
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// The command's name: its first word that is not a reserved word or an
/// assignment (`None` when not known yet, or not known here).
fn command_name(words: &[Option<String>]) -> Option<&str> {
    let name = words.iter().find(|w| match w.as_deref() {
        Some(w) => !RESERVED.contains(&w) && !is_assignment(w),
        None => true,
    });
    name.and_then(|n| n.as_deref())
}

/// bash's arithmetic comparisons in `[[ … ]]`.
fn is_arith_op(word: &str) -> bool {
    matches!(word, "-eq" | "-ne" | "-lt" | "-le" | "-gt" | "-ge")
}

/// Whether `text` is a shell variable name.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && !text.starts_with(|c: char| c.is_ascii_digit())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether the next word of a command made of `words` is a nested shell's script:
/// the argument after `-c` of a shell (wherever the shell's name stands: `env X=1
/// sh -c`, `timeout 5 bash -c`, `find -exec sh -c`), or an argument of `eval`.
fn is_script_position(words: &[Option<String>]) -> bool {
    if let Some((prev, before)) = words.split_last() {
        if is_c_flag(prev) && before.iter().any(is_shell) {
            return true;
        }
    }
    command_name(words) == Some("eval")
}

/// Whether a command of `words` reads a here-document as a shell script (`sh
/// <<EOF`, `bash -s <<'EOF'`): a shell is named and none has `-c`.
fn reads_script(words: &[Option<String>]) -> bool {
    words.iter().any(is_shell) && !words.iter().any(is_c_flag)
}

/// Outcome of one step of the parser.
enum Step {
    Done,
    /// Read the same token again in the new state.
    Again,
}

impl Level {
    fn new(taint: Taint) -> Level {
        Level {
            frames: vec![Frame::Cmd(Cmd::new(Close::End, false, taint))],
            pending: Pending::None,
            children: Vec::new(),
            deferred: Vec::new(),
            taint,
        }
    }

    /// Start a child level for the script the frame at `at` holds.
    fn start_child(&mut self, at: usize) {
        let taint = self.taint_here();
        self.children.push((Box::new(Level::new(taint)), at));
    }

    /// Forget the child level held by the frame at `at` (its script ended),
    /// keeping what it found.
    fn end_child(&mut self, at: usize) {
        if let Some(i) = self.children.iter().position(|(_, o)| *o == at) {
            for (mut child, _) in self.children.drain(i..) {
                child.end_all();
                self.deferred.append(&mut child.deferred);
            }
        }
    }

    /// Forget every child level (the script ended).
    fn end_all(&mut self) {
        for (mut child, _) in std::mem::take(&mut self.children) {
            child.end_all();
            self.deferred.append(&mut child.deferred);
        }
    }

    /// What a value's text would become at the current position: `Script` inside
    /// an expansion within a nested script's text, `Arith` in arithmetic (or in an
    /// expansion whose result arithmetic evaluates), else the level's own taint.
    fn taint_here(&self) -> Taint {
        if !self.children.is_empty() && !self.forwarding() {
            return Taint::Script;
        }
        for f in self.frames.iter().rev() {
            match f {
                Frame::Cmd(c) => {
                    if c.taint != Taint::None {
                        return c.taint;
                    }
                    let name = command_name(&c.words);
                    let after_op = c
                        .words
                        .last()
                        .and_then(|w| w.as_deref())
                        .is_some_and(is_arith_op);
                    if name == Some("let") || (name == Some("[[") && after_op) {
                        return Taint::Arith;
                    }
                    return self.taint;
                }
                Frame::Heredoc(_) | Frame::Comment => {}
                f if f.arith() => return Taint::Arith,
                _ => {}
            }
        }
        self.taint
    }

    fn top(&mut self) -> &mut Frame {
        if self.frames.is_empty() {
            // The outermost list of commands ends only with the script; a stray
            // `)` at the top is the shell's syntax error, not ours.
            self.frames
                .push(Frame::Cmd(Cmd::new(Close::End, false, self.taint)));
        }
        let last = self.frames.len() - 1;
        &mut self.frames[last]
    }

    /// The index of the frame whose word (or body) the top quote frames belong
    /// to.
    fn owner(&self) -> Option<usize> {
        let mut i = self.frames.len();
        while i > 0 {
            i -= 1;
            if !self.frames[i].is_quote() {
                return Some(i);
            }
        }
        None
    }

    /// Whether the current position is text of the innermost child's script.
    fn forwarding(&self) -> bool {
        match (self.children.last(), self.owner()) {
            (Some((_, at)), Some(o)) => *at == o,
            _ => false,
        }
    }

    /// `t` is (after quote removal) text of the current word or document body.
    fn content(&mut self, t: Tok) {
        let Some(o) = self.owner() else { return };
        if let Frame::Cmd(c) = &mut self.frames[o] {
            if let Some(w) = &mut c.word {
                match (t, &mut w.text) {
                    (Tok::Ch(ch), Some(text)) => text.push(ch),
                    (_, text) => *text = None,
                }
            }
        }
        if self.forwarding() {
            if let Some((child, _)) = self.children.last_mut() {
                child.feed(t);
            }
        }
    }

    /// Mark the current word as holding something not known here.
    fn mark_unknown(&mut self) {
        let Some(o) = self.owner() else { return };
        if let Frame::Cmd(c) = &mut self.frames[o] {
            if let Some(w) = &mut c.word {
                w.text = None;
            }
        }
        if let Frame::Heredoc(h) = &mut self.frames[o] {
            h.line_plain = false;
        }
    }

    /// Start a word in the top `Cmd` frame, if none is being read: decides whether
    /// it is a nested shell's script.
    fn start_word(&mut self) {
        let at = self.frames.len() - 1;
        let Frame::Cmd(c) = &mut self.frames[at] else {
            return;
        };
        if c.word.is_some() {
            return;
        }
        let role = match c.next {
            Next::Delim { strip } => Role::Delim { strip },
            Next::HereString if reads_script(&c.words) => Role::Script,
            Next::HereString => Role::Normal,
            Next::Normal if is_script_position(&c.words) => Role::Script,
            Next::Normal => Role::Normal,
        };
        c.next = Next::Normal;
        c.word = Some(Word {
            text: Some(String::new()),
            quoted: false,
            role,
        });
        if role == Role::Script {
            self.start_child(at);
        }
    }

    /// End the word of the top `Cmd` frame.
    fn end_word(&mut self) {
        let at = self.frames.len() - 1;
        let Frame::Cmd(c) = &mut self.frames[at] else {
            return;
        };
        let Some(w) = c.word.take() else { return };
        match w.role {
            Role::Delim { strip } => {
                let script = reads_script(&c.words);
                c.heredocs.push(DocSpec {
                    delim: w.text,
                    quoted: w.quoted,
                    strip,
                    script,
                });
            }
            Role::Script => {
                c.words.push(w.text);
                self.end_child(at);
            }
            Role::Normal => {
                // `[[ A -eq B ]]` (bash) evaluates A as arithmetic too.
                let op = w.text.as_deref().is_some_and(is_arith_op);
                if op && command_name(&c.words) == Some("[[") {
                    if let Some((i, var)) = c.maybe_arith.take() {
                        if i + 1 == c.words.len() {
                            self.deferred.push(var);
                        }
                    }
                }
                let Frame::Cmd(c) = &mut self.frames[at] else {
                    return;
                };
                if c.words.is_empty() {
                    match w.text.as_deref() {
                        Some("case") => c.cases += 1,
                        Some("esac") => c.cases = c.cases.saturating_sub(1),
                        _ => {}
                    }
                }
                c.words.push(w.text);
            }
        }
    }

    fn push(&mut self, f: Frame) {
        self.frames.push(f);
    }

    /// Leave the top frame; an expansion's result becomes text of the word.
    fn pop(&mut self) {
        let Some(f) = self.frames.pop() else { return };
        let at = self.frames.len();
        self.end_child(at);
        let expansion = match &f {
            Frame::Cmd(c) => c.subst,
            Frame::Backtick { .. } => true,
            Frame::Param { .. } => true,
            Frame::Arith { subst, .. } => *subst,
            _ => false,
        };
        if expansion {
            self.content(Tok::Unknown);
        }
    }

    /// Start the here-documents of the line that just ended, first one on top.
    fn start_heredocs(&mut self) {
        let at = self.frames.len() - 1;
        let Frame::Cmd(c) = &mut self.frames[at] else {
            return;
        };
        let docs = std::mem::take(&mut c.heredocs);
        for spec in docs.into_iter().rev() {
            self.frames.push(Frame::Heredoc(Heredoc {
                spec,
                line: String::new(),
                line_plain: true,
            }));
        }
        self.start_child_for_heredoc();
    }

    /// A here-document a shell reads as its script gets a child level.
    fn start_child_for_heredoc(&mut self) {
        let at = self.frames.len() - 1;
        if let Frame::Heredoc(h) = &self.frames[at] {
            if h.spec.script && !self.children.iter().any(|(_, o)| *o == at) {
                self.start_child(at);
            }
        }
    }

    /// What the output of an expansion opened here becomes: opened in a nested
    /// shell's script text, that script's code.
    fn expansion_taint(&self) -> Taint {
        if self.forwarding() {
            Taint::Script
        } else {
            self.taint_here()
        }
    }

    /// A backquote opens a command substitution read by a child level.
    fn open_backtick(&mut self, in_double: bool) {
        self.mark_unknown();
        let taint = self.expansion_taint();
        self.frames.push(Frame::Backtick { in_double });
        let at = self.frames.len() - 1;
        self.children.push((Box::new(Level::new(taint)), at));
    }

    /// Push a command substitution `$(…)`.
    fn open_subst(&mut self) {
        self.mark_unknown();
        let taint = self.expansion_taint();
        self.push(Frame::Cmd(Cmd::new(Close::Paren, true, taint)));
    }

    /// `$` was read: what follows it.
    fn dollar(&mut self, t: Tok, in_cmd: bool, quoted: bool, arith: bool) -> Step {
        self.pending = Pending::None;
        match t {
            Tok::Ch('(') => {
                self.pending = Pending::DollarParen;
                Step::Done
            }
            Tok::Ch('{') => {
                self.mark_unknown();
                self.push(Frame::Param {
                    quoted,
                    arith,
                    name: Name::Start,
                });
                Step::Done
            }
            Tok::Ch('[') => {
                self.mark_unknown();
                self.push(Frame::Arith {
                    depth: 0,
                    close: ']',
                    subst: true,
                });
                Step::Done
            }
            Tok::Ch('\'') if in_cmd => {
                self.push(Frame::AnsiSingle);
                Step::Done
            }
            Tok::Ch('"') if in_cmd => {
                self.push(Frame::Double { arith });
                Step::Done
            }
            _ => {
                self.content(Tok::Ch('$'));
                Step::Again
            }
        }
    }

    /// `$(` was read: `$((` is arithmetic, anything else a command substitution.
    fn dollar_paren(&mut self, t: Tok) -> Step {
        self.pending = Pending::None;
        if t == Tok::Ch('(') {
            self.mark_unknown();
            self.push(Frame::Arith {
                depth: 0,
                close: ')',
                subst: true,
            });
            Step::Done
        } else {
            self.open_subst();
            Step::Again
        }
    }

    /// Read one token.
    fn feed(&mut self, t: Tok) {
        while let Step::Again = self.step(t) {}
    }

    fn step(&mut self, t: Tok) -> Step {
        match self.pending {
            Pending::None => {}
            Pending::DollarParen => return self.dollar_paren(t),
            Pending::ArithClose => {
                self.pending = Pending::None;
                self.pop();
                return if t == Tok::Ch(')') {
                    Step::Done
                } else {
                    Step::Again
                };
            }
            _ => {}
        }
        let at = self.frames.len().saturating_sub(1);
        match self.top().clone_kind() {
            Kind::Cmd => self.step_cmd(t, at),
            Kind::Double { arith } => self.step_double(t, arith),
            Kind::Single => {
                if t == Tok::Ch('\'') {
                    self.pop();
                } else {
                    self.content(t);
                }
                Step::Done
            }
            Kind::AnsiSingle => {
                if self.pending == Pending::Escape {
                    self.pending = Pending::None;
                    self.content(t);
                } else if t == Tok::Ch('\\') {
                    self.pending = Pending::Escape;
                } else if t == Tok::Ch('\'') {
                    self.pop();
                } else {
                    self.content(t);
                }
                Step::Done
            }
            Kind::Param { quoted, arith } => self.step_param(t, quoted, arith),
            Kind::Arith => self.step_arith(t),
            Kind::Heredoc { quoted } => self.step_heredoc(t, quoted),
            Kind::Comment => {
                if t == Tok::Ch('\n') {
                    self.pop();
                    return Step::Again;
                }
                Step::Done
            }
            Kind::Backtick { in_double } => {
                if self.pending == Pending::Escape {
                    self.pending = Pending::None;
                    let removed =
                        matches!(t, Tok::Ch('$' | '`' | '\\')) || (in_double && t == Tok::Ch('"'));
                    if !removed {
                        self.content(Tok::Ch('\\'));
                    }
                    self.content(t);
                } else if t == Tok::Ch('\\') {
                    self.pending = Pending::Escape;
                } else if t == Tok::Ch('`') {
                    self.pop();
                } else {
                    self.content(t);
                }
                Step::Done
            }
        }
    }

    fn step_cmd(&mut self, t: Tok, at: usize) -> Step {
        match self.pending {
            Pending::Escape => {
                self.pending = Pending::None;
                if t != Tok::Ch('\n') {
                    self.start_word();
                    self.set_quoted();
                    self.content(t);
                }
                return Step::Done;
            }
            Pending::Dollar => return self.dollar(t, true, false, false),
            Pending::Lt => {
                self.pending = Pending::None;
                if t == Tok::Ch('<') {
                    self.pending = Pending::LtLt;
                    return Step::Done;
                }
                return Step::Again;
            }
            Pending::LtLt => {
                self.pending = Pending::None;
                let next = match t {
                    Tok::Ch('-') => Some(Next::Delim { strip: true }),
                    Tok::Ch('<') => Some(Next::HereString),
                    _ => None,
                };
                if let Frame::Cmd(c) = &mut self.frames[at] {
                    c.next = next.unwrap_or(Next::Delim { strip: false });
                }
                return if next.is_some() {
                    Step::Done
                } else {
                    Step::Again
                };
            }
            Pending::Paren => {
                self.pending = Pending::None;
                if t == Tok::Ch('(') {
                    self.push(Frame::Arith {
                        depth: 0,
                        close: ')',
                        subst: false,
                    });
                    return Step::Done;
                }
                let taint = self.taint_here();
                self.push(Frame::Cmd(Cmd::new(Close::Paren, false, taint)));
                return Step::Again;
            }
            _ => {}
        }
        let (close, in_word, arith_paren, cases) = match &self.frames[at] {
            Frame::Cmd(c) => (
                c.close,
                c.word.is_some(),
                // `((` where a command starts, or bash's `for ((`.
                c.words.is_empty() || (c.words.len() == 1 && c.words[0].as_deref() == Some("for")),
                c.cases,
            ),
            _ => return Step::Done,
        };
        let Tok::Ch(ch) = t else {
            self.start_word();
            self.content(t);
            return Step::Done;
        };
        match ch {
            ' ' | '\t' => self.end_word(),
            '\n' => {
                self.end_word();
                if let Frame::Cmd(c) = &mut self.frames[at] {
                    c.words.clear();
                    c.maybe_arith = None;
                }
                self.start_heredocs();
            }
            ';' | '&' | '|' => {
                self.end_word();
                if let Frame::Cmd(c) = &mut self.frames[at] {
                    c.words.clear();
                    c.maybe_arith = None;
                }
            }
            '<' => {
                self.end_word();
                self.pending = Pending::Lt;
            }
            '>' => self.end_word(),
            '(' => {
                self.end_word();
                if arith_paren && !in_word {
                    self.pending = Pending::Paren;
                } else {
                    let taint = self.taint_here();
                    self.push(Frame::Cmd(Cmd::new(Close::Paren, false, taint)));
                }
            }
            ')' if cases > 0 => {
                // The end of a `case` pattern: a command follows. Unless the word
                // it ends is the `esac` of the last one (`$(case … esac)`): then
                // it closes what it closes after any command.
                self.end_word();
                let Frame::Cmd(c) = &mut self.frames[at] else {
                    return Step::Done;
                };
                if c.cases == 0 {
                    if close == Close::Paren {
                        self.pop();
                    }
                } else {
                    c.words.clear();
                }
            }
            ')' => {
                self.end_word();
                if close == Close::Paren {
                    self.pop();
                }
            }
            '`' => {
                self.start_word();
                self.open_backtick(false);
            }
            '#' if !in_word => self.push(Frame::Comment),
            // `NAME[…]` starting a word: bash's array subscript (in `a[…]=v`),
            // evaluated as arithmetic.
            '[' if self.word_is_name(at) => {
                self.content(Tok::Ch('['));
                self.push(Frame::Arith {
                    depth: 0,
                    close: ']',
                    subst: false,
                });
            }
            '\\' => {
                self.start_word();
                self.pending = Pending::Escape;
            }
            '\'' => {
                self.start_word();
                self.set_quoted();
                self.push(Frame::Single { arith: false });
            }
            '"' => {
                self.start_word();
                self.set_quoted();
                self.push(Frame::Double { arith: false });
            }
            '$' => {
                self.start_word();
                self.pending = Pending::Dollar;
            }
            c => {
                self.start_word();
                self.content(Tok::Ch(c));
            }
        }
        Step::Done
    }

    /// Whether the word being read in the `Cmd` frame `at` is so far a bare
    /// variable name.
    fn word_is_name(&self, at: usize) -> bool {
        match &self.frames[at] {
            Frame::Cmd(c) => c.word.as_ref().is_some_and(|w| {
                !w.quoted && w.role == Role::Normal && w.text.as_deref().is_some_and(is_name)
            }),
            _ => false,
        }
    }

    fn set_quoted(&mut self) {
        if let Some(Frame::Cmd(c)) = self.frames.last_mut() {
            if let Some(w) = &mut c.word {
                w.quoted = true;
            }
        }
    }

    fn step_double(&mut self, t: Tok, arith: bool) -> Step {
        match self.pending {
            Pending::Escape => {
                self.pending = Pending::None;
                match t {
                    Tok::Ch('$' | '`' | '"' | '\\') => self.content(t),
                    Tok::Ch('\n') => {}
                    _ => {
                        self.content(Tok::Ch('\\'));
                        self.content(t);
                    }
                }
                return Step::Done;
            }
            Pending::Dollar => return self.dollar(t, false, true, arith),
            _ => {}
        }
        match t {
            Tok::Ch('"') => self.pop(),
            Tok::Ch('\\') => self.pending = Pending::Escape,
            Tok::Ch('$') => self.pending = Pending::Dollar,
            Tok::Ch('`') => self.open_backtick(true),
            _ => self.content(t),
        }
        Step::Done
    }

    fn step_param(&mut self, t: Tok, quoted: bool, arith: bool) -> Step {
        match self.pending {
            Pending::Escape => {
                self.pending = Pending::None;
                return Step::Done;
            }
            Pending::Dollar => return self.dollar(t, false, quoted, arith),
            _ => {}
        }
        let name = match self.frames.last() {
            Some(Frame::Param { name, .. }) => *name,
            _ => return Step::Done,
        };
        let set_name = |level: &mut Level, n: Name| {
            if let Some(Frame::Param { name, .. }) = level.frames.last_mut() {
                *name = n;
            }
        };
        if name != Name::Done {
            match t {
                Tok::Ch('#' | '!') if name == Name::Start => return Step::Done,
                Tok::Ch(c) if c.is_ascii_alphanumeric() || c == '_' => {
                    set_name(self, Name::Reading);
                    return Step::Done;
                }
                Tok::Ch('@' | '*' | '?' | '$' | '-') if name == Name::Start => {
                    set_name(self, Name::Reading);
                    return Step::Done;
                }
                Tok::Ch('[') if name == Name::Reading => {
                    set_name(self, Name::Done);
                    self.push(Frame::Arith {
                        depth: 0,
                        close: ']',
                        subst: false,
                    });
                    return Step::Done;
                }
                _ => set_name(self, Name::Done),
            }
        }
        match t {
            Tok::Ch('}') => self.pop(),
            Tok::Ch('\\') => self.pending = Pending::Escape,
            Tok::Ch('$') => self.pending = Pending::Dollar,
            Tok::Ch('`') => self.open_backtick(quoted),
            Tok::Ch('"') => self.push(Frame::Double { arith }),
            Tok::Ch('\'') if !quoted => self.push(Frame::Single { arith }),
            _ => {}
        }
        Step::Done
    }

    fn step_arith(&mut self, t: Tok) -> Step {
        match self.pending {
            Pending::Escape => {
                self.pending = Pending::None;
                return Step::Done;
            }
            Pending::Dollar => return self.dollar(t, false, true, true),
            _ => {}
        }
        let Some(Frame::Arith { depth, close, .. }) = self.frames.last_mut() else {
            return Step::Done;
        };
        let close = *close;
        let open = if close == ')' { '(' } else { '[' };
        match t {
            Tok::Ch(c) if c == open => *depth += 1,
            Tok::Ch(c) if c == close && *depth > 0 => *depth -= 1,
            Tok::Ch(')') if close == ')' => self.pending = Pending::ArithClose,
            Tok::Ch(']') if close == ']' => self.pop(),
            Tok::Ch('$') => self.pending = Pending::Dollar,
            Tok::Ch('\\') => self.pending = Pending::Escape,
            Tok::Ch('`') => self.open_backtick(false),
            Tok::Ch('"') => self.push(Frame::Double { arith: true }),
            Tok::Ch('\'') => self.push(Frame::Single { arith: true }),
            _ => {}
        }
        Step::Done
    }

    fn step_heredoc(&mut self, t: Tok, quoted: bool) -> Step {
        if !quoted {
            match self.pending {
                Pending::Escape => {
                    self.pending = Pending::None;
                    self.line_push(t);
                    match t {
                        Tok::Ch('$' | '`' | '\\') => self.content(t),
                        Tok::Ch('\n') => {}
                        _ => {
                            self.content(Tok::Ch('\\'));
                            self.content(t);
                        }
                    }
                    return Step::Done;
                }
                Pending::Dollar => {
                    self.mark_unknown();
                    return self.dollar(t, false, true, false);
                }
                _ => {}
            }
        }
        match t {
            Tok::Ch('\n') => {
                let end = match self.frames.last() {
                    Some(Frame::Heredoc(h)) => {
                        let line = if h.spec.strip {
                            h.line.trim_start_matches('\t')
                        } else {
                            h.line.as_str()
                        };
                        h.line_plain && h.spec.delim.as_deref() == Some(line)
                    }
                    _ => false,
                };
                if end {
                    self.pop();
                    self.start_child_for_heredoc();
                } else {
                    self.content(t);
                    if let Some(Frame::Heredoc(h)) = self.frames.last_mut() {
                        h.line.clear();
                        h.line_plain = true;
                    }
                }
            }
            Tok::Ch('\\') if !quoted => {
                self.line_push(t);
                self.pending = Pending::Escape;
            }
            Tok::Ch('$') if !quoted => {
                self.line_push(t);
                self.pending = Pending::Dollar;
            }
            Tok::Ch('`') if !quoted => self.open_backtick(false),
            _ => {
                self.line_push(t);
                self.content(t);
            }
        }
        Step::Done
    }

    fn line_push(&mut self, t: Tok) {
        if let Some(Frame::Heredoc(h)) = self.frames.last_mut() {
            match t {
                Tok::Ch(c) => h.line.push(c),
                Tok::Unknown => h.line_plain = false,
            }
        }
    }

    /// Settle a pending character before a reference, as if a plain character
    /// followed it.
    fn settle(&mut self) -> Result<(), RefError> {
        let pending = self.pending;
        self.pending = Pending::None;
        match pending {
            Pending::None => {}
            Pending::Escape => {
                return Err(RefError::Refused(
                    "a backslash right before it would escape the quoting autobot puts there; \
                     remove the backslash"
                        .into(),
                ))
            }
            Pending::Dollar => self.content(Tok::Ch('$')),
            Pending::DollarParen => self.open_subst(),
            Pending::Lt => {}
            Pending::LtLt => {
                if let Some(Frame::Cmd(c)) = self.frames.last_mut() {
                    c.next = Next::Delim { strip: false };
                }
            }
            Pending::Paren => {
                let taint = self.taint_here();
                self.push(Frame::Cmd(Cmd::new(Close::Paren, false, taint)));
            }
            Pending::ArithClose => self.pop(),
        }
        Ok(())
    }

    /// The text that puts `${var}` (holding `value`) at the current position, at
    /// this level or, when the position is a nested shell's script, the child's
    /// text escaped for this level.
    fn reference(&mut self, var: &str, value: &str) -> Result<String, RefError> {
        self.settle()?;
        if matches!(self.frames.last(), Some(Frame::Cmd(_))) {
            self.start_word();
        }
        if self.forwarding() {
            let inner = match self.children.last_mut() {
                Some((child, _)) => child.reference(var, value)?,
                None => return Err(RefError::Refused("lost the nested script".into())),
            };
            self.mark_unknown();
            return Ok(self.escape_here(&inner));
        }
        match self.taint_here() {
            Taint::Script => {
                return Err(RefError::Refused(
                    "it stands in an expansion inside a nested shell's script (sh -c, eval): \
                     its result would become that shell's code; reference the property's \
                     environment variable (AUTOBOT_PROP_…) in the nested script instead"
                        .into(),
                ))
            }
            Taint::Arith => {
                if !plain_integer(value) {
                    return Err(RefError::NotAnInteger);
                }
                self.mark_unknown();
                return Ok(format!("${{{var}}}"));
            }
            Taint::None => {}
        }
        if let Some(Frame::Cmd(c)) = self.frames.last_mut() {
            if command_name(&c.words) == Some("[[") && !plain_integer(value) {
                // Known once the next word is read: `[[ A -eq B ]]`.
                c.maybe_arith = Some((c.words.len(), var.to_string()));
            }
        }
        let quoted_var = format!("\"${{{var}}}\"");
        let bare_var = format!("${{{var}}}");
        let out = match self.frames.last() {
            Some(Frame::Cmd(c)) => match c.word.as_ref().map(|w| w.role) {
                Some(Role::Delim { .. }) => {
                    return Err(RefError::Refused(
                        "a here-document's delimiter must be written out".into(),
                    ))
                }
                _ => quoted_var,
            },
            Some(Frame::Double { .. }) => bare_var,
            Some(Frame::Single { .. }) => format!("'{quoted_var}'"),
            Some(Frame::AnsiSingle) => format!("'{quoted_var}$'"),
            Some(Frame::Param { name, quoted, .. }) => {
                if *name != Name::Done {
                    return Err(RefError::Refused(
                        "it stands where ${…} names a variable; a value cannot name one".into(),
                    ));
                }
                if *quoted {
                    bare_var
                } else {
                    quoted_var
                }
            }
            Some(Frame::Heredoc(h)) if h.spec.quoted => {
                return Err(RefError::Refused(
                    "a quoted here-document (<<'EOF') expands nothing; write the delimiter \
                     unquoted (<<EOF) to have the value there"
                        .into(),
                ))
            }
            Some(Frame::Heredoc(_)) | Some(Frame::Comment) => bare_var,
            Some(Frame::Arith { .. }) | Some(Frame::Backtick { .. }) | None => bare_var,
        };
        self.mark_unknown();
        Ok(out)
    }

    /// `text` (a reference the child level wrote) written so that this level, at
    /// the current position, hands exactly `text` to the child.
    fn escape_here(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() * 2);
        match self.frames.last() {
            Some(Frame::Single { .. }) => {
                for c in text.chars() {
                    if c == '\'' {
                        out.push_str("'\\''");
                    } else {
                        out.push(c);
                    }
                }
            }
            Some(Frame::AnsiSingle) => {
                for c in text.chars() {
                    if c == '\'' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            Some(Frame::Double { .. }) => {
                for c in text.chars() {
                    if matches!(c, '$' | '`' | '"' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            Some(Frame::Heredoc(h)) if h.spec.quoted => out.push_str(text),
            Some(Frame::Backtick { .. }) => {
                for c in text.chars() {
                    if matches!(c, '$' | '`' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            Some(Frame::Heredoc(_)) => {
                for c in text.chars() {
                    if matches!(c, '$' | '`' | '\\') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            _ => {
                for c in text.chars() {
                    if !(c.is_ascii_alphanumeric() || c == '_') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
        }
        out
    }
}

/// The frame kinds, without their data, to dispatch on.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Cmd,
    Double { arith: bool },
    Single,
    AnsiSingle,
    Param { quoted: bool, arith: bool },
    Arith,
    Heredoc { quoted: bool },
    Comment,
    Backtick { in_double: bool },
}

impl Frame {
    fn clone_kind(&self) -> Kind {
        match self {
            Frame::Cmd(_) => Kind::Cmd,
            Frame::Double { arith } => Kind::Double { arith: *arith },
            Frame::Single { .. } => Kind::Single,
            Frame::AnsiSingle => Kind::AnsiSingle,
            Frame::Param { quoted, arith, .. } => Kind::Param {
                quoted: *quoted,
                arith: *arith,
            },
            Frame::Arith { .. } => Kind::Arith,
            Frame::Heredoc(h) => Kind::Heredoc {
                quoted: h.spec.quoted,
            },
            Frame::Comment => Kind::Comment,
            Frame::Backtick { in_double } => Kind::Backtick {
                in_double: *in_double,
            },
        }
    }
}

/// A value arithmetic may take: a plain decimal integer (no leading zeros, which
/// the shell reads as octal; at most 18 digits, so it fits in 64 bits).
pub(super) fn plain_integer(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value);
    !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

/// Follows a shell script as it is written, to place references in it.
#[derive(Debug, Clone)]
pub(super) struct Tracker {
    level: Level,
}

impl Tracker {
    pub(super) fn new() -> Tracker {
        Tracker {
            level: Level::new(Taint::None),
        }
    }

    /// Read literal script text.
    pub(super) fn text(&mut self, text: &str) {
        for c in text.chars() {
            self.level.feed(Tok::Ch(c));
        }
    }

    /// The text to write for a reference to the environment variable `var`,
    /// which holds `value`, at the current position.
    pub(super) fn reference(&mut self, var: &str, value: &str) -> Result<String, RefError> {
        self.level.reference(var, value)
    }

    /// What the script as read so far leaves open that `/bin/sh` would reject at
    /// its end: a quote (`'…`, `"…`, `$'…`), a backquote, `$(`, `(`, `${`, `$((`
    /// or a trailing backslash (`None` when nothing is). Here-documents and
    /// compound commands (`if` without `fi`) are left to the shell.
    pub(super) fn unclosed(&self) -> Option<&'static str> {
        if self.level.pending == Pending::Escape {
            return Some("a trailing backslash escapes nothing");
        }
        self.level.frames.iter().rev().find_map(|f| match f {
            Frame::Single { .. } | Frame::AnsiSingle => Some("unterminated ' quote"),
            Frame::Double { .. } => Some("unterminated \" quote"),
            Frame::Backtick { .. } => Some("unterminated ` (command substitution)"),
            Frame::Cmd(Cmd {
                close: Close::Paren,
                subst: true,
                ..
            }) => Some("unterminated $( (command substitution): no closing )"),
            Frame::Cmd(Cmd {
                close: Close::Paren,
                ..
            }) => Some("unterminated ( (subshell): no closing )"),
            Frame::Param { .. } => Some("unterminated ${ (parameter expansion): no closing }"),
            Frame::Arith { close: ')', .. } => Some("unterminated $(( (arithmetic): no closing ))"),
            Frame::Arith { .. } => Some("unterminated [ (arithmetic or subscript): no closing ]"),
            _ => None,
        })
    }

    /// The variables found to be in arithmetic only after their reference (the
    /// left operand of `[[ A -eq B ]]`), whose values are not integers.
    pub(super) fn finish(mut self) -> Vec<String> {
        self.level.end_all();
        self.level.deferred
    }
}
