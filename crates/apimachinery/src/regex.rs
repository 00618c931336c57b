//! A small regular-expression engine for `pattern:` (Go RE2 syntax, unanchored search).
//!
//! CRD `pattern` values are evaluated by the apiserver with Go's `regexp`; this crate may not
//! depend on a regex library, so this module implements the RE2 subset that schemas use:
//! literals, `.`, classes (`[a-z]`, `[^...]`, `[[:alpha:]]`, `\d\w\s` and negations,
//! `\pL`/`\p{..}` approximations), anchors (`^ $ \A \z \b \B`), groups (capturing,
//! `(?:...)`, named), alternation, greedy and lazy quantifiers (`* + ? {n} {n,} {n,m}`) and the
//! flags `i`, `s`, `m`. Matching is a Pike VM: linear in the input, no backtracking blow-up.

#[derive(Debug, Clone)]
pub(crate) struct Regex {
    prog: Vec<Inst>,
}

#[derive(Debug, Clone)]
enum Inst {
    Char(Pred),
    Split(usize, usize),
    Jmp(usize),
    Assert(Assert),
    Match,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Assert {
    BeginText,
    EndText,
    BeginLine,
    EndLine,
    WordBoundary,
    NotWordBoundary,
}

#[derive(Debug, Clone)]
enum Pred {
    Lit(char, bool),
    Any { newline: bool },
    Class(Class),
}

#[derive(Debug, Clone, Default)]
struct Class {
    ranges: Vec<(char, char)>,
    negated: bool,
    icase: bool,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let hit = |c: char| self.ranges.iter().any(|&(a, b)| a <= c && c <= b);
        let mut m = hit(c);
        if !m && self.icase {
            m = c.to_lowercase().any(hit) || c.to_uppercase().any(hit);
        }
        m != self.negated
    }
}

impl Pred {
    fn matches(&self, c: char) -> bool {
        match self {
            Pred::Lit(l, icase) => *l == c || (*icase && (l.to_lowercase().eq(c.to_lowercase()))),
            Pred::Any { newline } => *newline || c != '\n',
            Pred::Class(cl) => cl.matches(c),
        }
    }
}

#[derive(Debug, Clone)]
enum Node {
    Empty,
    Char(Pred),
    Assert(Assert),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
        greedy: bool,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    icase: bool,
    dotnl: bool,
    multiline: bool,
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    src: &'a str,
}

const MAX_REPEAT: u32 = 1000;

impl Regex {
    /// Compiles `pattern`; the error text follows Go's `regexp/syntax` wording where it can.
    pub(crate) fn new(pattern: &str) -> Result<Regex, String> {
        let mut p = Parser {
            chars: pattern.chars().collect(),
            pos: 0,
            src: pattern,
        };
        let mut flags = Flags::default();
        let node = p.parse_alt(&mut flags, 0)?;
        if p.pos < p.chars.len() {
            return Err(format!("error parsing regexp: unexpected ): `{}`", p.src));
        }
        let mut prog = Vec::new();
        compile(&node, &mut prog)?;
        prog.push(Inst::Match);
        if prog.len() > 200_000 {
            return Err(format!(
                "error parsing regexp: expression too large: `{}`",
                p.src
            ));
        }
        Ok(Regex { prog })
    }

    /// Whether the pattern matches anywhere in `text` (Go's `MatchString`).
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let n = self.prog.len();
        let mut clist: Vec<usize> = Vec::new();
        let mut nlist: Vec<usize> = Vec::new();
        let mut seen = vec![usize::MAX; n];
        let mut generation = 0usize;
        for i in 0..=chars.len() {
            // Unanchored search: a new thread starts at every position.
            generation += 1;
            // Re-mark existing threads of this generation.
            let current = std::mem::take(&mut clist);
            for pc in current {
                if self.add(&mut clist, &mut seen, generation, pc, &chars, i) {
                    return true;
                }
            }
            if self.add(&mut clist, &mut seen, generation, 0, &chars, i) {
                return true;
            }
            if i == chars.len() {
                break;
            }
            let c = chars[i];
            nlist.clear();
            for &pc in &clist {
                if let Inst::Char(p) = &self.prog[pc]
                    && p.matches(c)
                {
                    nlist.push(pc + 1);
                }
            }
            std::mem::swap(&mut clist, &mut nlist);
        }
        false
    }

    /// Adds the epsilon closure of `pc` at position `i`; returns true when Match is reached.
    fn add(
        &self,
        list: &mut Vec<usize>,
        seen: &mut [usize],
        generation: usize,
        pc: usize,
        chars: &[char],
        i: usize,
    ) -> bool {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if pc >= self.prog.len() || seen[pc] == generation {
                continue;
            }
            seen[pc] = generation;
            match &self.prog[pc] {
                Inst::Match => return true,
                Inst::Jmp(t) => stack.push(*t),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Assert(a) => {
                    if check_assert(*a, chars, i) {
                        stack.push(pc + 1);
                    }
                }
                Inst::Char(_) => list.push(pc),
            }
        }
        false
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn check_assert(a: Assert, chars: &[char], i: usize) -> bool {
    match a {
        Assert::BeginText => i == 0,
        Assert::EndText => i == chars.len(),
        Assert::BeginLine => i == 0 || chars[i - 1] == '\n',
        Assert::EndLine => i == chars.len() || chars[i] == '\n',
        Assert::WordBoundary | Assert::NotWordBoundary => {
            let before = i > 0 && is_word(chars[i - 1]);
            let after = i < chars.len() && is_word(chars[i]);
            (before != after) == (a == Assert::WordBoundary)
        }
    }
}

fn compile(node: &Node, prog: &mut Vec<Inst>) -> Result<(), String> {
    if prog.len() > 200_000 {
        return Err("error parsing regexp: expression too large".into());
    }
    match node {
        Node::Empty => {}
        Node::Char(p) => prog.push(Inst::Char(p.clone())),
        Node::Assert(a) => prog.push(Inst::Assert(*a)),
        Node::Concat(v) => {
            for n in v {
                compile(n, prog)?;
            }
        }
        Node::Alt(v) => {
            // split L1, next ; L1: a ; jmp end ; next: split ...
            let mut jumps = Vec::new();
            for (i, n) in v.iter().enumerate() {
                if i + 1 < v.len() {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    compile(n, prog)?;
                    jumps.push(prog.len());
                    prog.push(Inst::Jmp(0));
                    let next = prog.len();
                    prog[split] = Inst::Split(split + 1, next);
                } else {
                    compile(n, prog)?;
                }
            }
            let end = prog.len();
            for j in jumps {
                prog[j] = Inst::Jmp(end);
            }
        }
        Node::Repeat {
            node,
            min,
            max,
            greedy,
        } => {
            for _ in 0..*min {
                compile(node, prog)?;
            }
            match max {
                None => {
                    // L: split body, end ; body ; jmp L
                    let split = prog.len();
                    prog.push(Inst::Split(0, 0));
                    compile(node, prog)?;
                    prog.push(Inst::Jmp(split));
                    let end = prog.len();
                    prog[split] = if *greedy {
                        Inst::Split(split + 1, end)
                    } else {
                        Inst::Split(end, split + 1)
                    };
                }
                Some(max) => {
                    let mut splits = Vec::new();
                    for _ in *min..*max {
                        splits.push(prog.len());
                        prog.push(Inst::Split(0, 0));
                        compile(node, prog)?;
                    }
                    let end = prog.len();
                    for s in splits {
                        prog[s] = if *greedy {
                            Inst::Split(s + 1, end)
                        } else {
                            Inst::Split(end, s + 1)
                        };
                    }
                }
            }
        }
    }
    Ok(())
}

impl Parser<'_> {
    fn err(&self, what: &str, arg: &str) -> String {
        format!("error parsing regexp: {what}: `{arg}`")
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn parse_alt(&mut self, flags: &mut Flags, depth: usize) -> Result<Node, String> {
        if depth > 100 {
            return Err(self.err("expression nests too deeply", self.src));
        }
        let mut alts = vec![self.parse_concat(flags, depth)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alts.push(self.parse_concat(flags, depth)?);
        }
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(alts)
        })
    }

    fn parse_concat(&mut self, flags: &mut Flags, depth: usize) -> Result<Node, String> {
        let mut items: Vec<Node> = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = match c {
                '(' => {
                    self.pos += 1;
                    match self.parse_group(flags, depth)? {
                        Some(n) => n,
                        None => continue, // flag-only group like (?i)
                    }
                }
                '*' | '+' | '?' => {
                    return Err(self.err("missing argument to repetition operator", &c.to_string()));
                }
                '{' if self.repeat_ahead() => {
                    return Err(self.err("missing argument to repetition operator", "{"));
                }
                _ => self.parse_atom(flags)?,
            };
            let atom = self.parse_repeats(atom)?;
            items.push(atom);
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(items),
        })
    }

    fn repeat_ahead(&self) -> bool {
        // `{n}`, `{n,}` or `{n,m}` starting at pos; otherwise `{` is a literal.
        let mut i = self.pos + 1;
        let mut digits = 0;
        while i < self.chars.len() && self.chars[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
        if digits == 0 || i >= self.chars.len() {
            return false;
        }
        if self.chars[i] == '}' {
            return true;
        }
        if self.chars[i] != ',' {
            return false;
        }
        i += 1;
        while i < self.chars.len() && self.chars[i].is_ascii_digit() {
            i += 1;
        }
        i < self.chars.len() && self.chars[i] == '}'
    }

    fn parse_repeats(&mut self, mut atom: Node) -> Result<Node, String> {
        let mut repeated = false;
        loop {
            let (min, max) = match self.peek() {
                Some('*') => {
                    self.pos += 1;
                    (0, None)
                }
                Some('+') => {
                    self.pos += 1;
                    (1, None)
                }
                Some('?') => {
                    self.pos += 1;
                    (0, Some(1))
                }
                Some('{') if self.repeat_ahead() => {
                    let start = self.pos;
                    self.pos += 1;
                    let min = self.number();
                    let max = if self.peek() == Some(',') {
                        self.pos += 1;
                        if self.peek() == Some('}') {
                            None
                        } else {
                            Some(self.number())
                        }
                    } else {
                        Some(min)
                    };
                    self.pos += 1; // '}'
                    let text: String = self.chars[start..self.pos].iter().collect();
                    if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT || m < min) {
                        return Err(self.err("invalid repeat count", &text));
                    }
                    (min, max)
                }
                _ => return Ok(atom),
            };
            if repeated {
                return Err(self.err("invalid nested repetition operator", "**"));
            }
            repeated = true;
            let greedy = if self.peek() == Some('?') {
                self.pos += 1;
                false
            } else {
                true
            };
            atom = Node::Repeat {
                node: Box::new(atom),
                min,
                max,
                greedy,
            };
        }
    }

    fn number(&mut self) -> u32 {
        let mut n: u32 = 0;
        while let Some(c) = self.peek() {
            let Some(d) = c.to_digit(10) else { break };
            n = n.saturating_mul(10).saturating_add(d);
            self.pos += 1;
        }
        n
    }

    fn parse_group(&mut self, flags: &mut Flags, depth: usize) -> Result<Option<Node>, String> {
        let mut inner = *flags;
        if self.peek() == Some('?') {
            self.pos += 1;
            match self.peek() {
                Some('P') | Some('<') => {
                    if self.peek() == Some('P') {
                        self.pos += 1;
                    }
                    if self.peek() != Some('<') {
                        return Err(self.err("invalid or unsupported Perl syntax", "(?P"));
                    }
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == '>' {
                            break;
                        }
                    }
                }
                _ => {
                    // flags: (?i) (?i:...) (?-i)
                    let mut neg = false;
                    loop {
                        match self.peek() {
                            Some('i') => inner.icase = !neg,
                            Some('s') => inner.dotnl = !neg,
                            Some('m') => inner.multiline = !neg,
                            Some('U') => {}
                            Some('-') => neg = true,
                            Some(':') => {
                                self.pos += 1;
                                break;
                            }
                            Some(')') => {
                                self.pos += 1;
                                *flags = inner;
                                return Ok(None);
                            }
                            _ => return Err(self.err("invalid or unsupported Perl syntax", "(?")),
                        }
                        self.pos += 1;
                    }
                }
            }
        }
        let node = self.parse_alt(&mut inner, depth + 1)?;
        if self.peek() != Some(')') {
            return Err(self.err("missing closing )", self.src));
        }
        self.pos += 1;
        Ok(Some(node))
    }

    fn parse_atom(&mut self, flags: &Flags) -> Result<Node, String> {
        let c = self.peek().unwrap_or('\0');
        self.pos += 1;
        Ok(match c {
            '.' => Node::Char(Pred::Any {
                newline: flags.dotnl,
            }),
            '^' => Node::Assert(if flags.multiline {
                Assert::BeginLine
            } else {
                Assert::BeginText
            }),
            '$' => Node::Assert(if flags.multiline {
                Assert::EndLine
            } else {
                Assert::EndText
            }),
            '[' => Node::Char(Pred::Class(self.parse_class(flags)?)),
            '\\' => self.parse_escape(flags)?,
            c => Node::Char(Pred::Lit(c, flags.icase)),
        })
    }

    fn parse_escape(&mut self, flags: &Flags) -> Result<Node, String> {
        let Some(c) = self.peek() else {
            return Err(self.err("trailing backslash at end of expression", ""));
        };
        self.pos += 1;
        Ok(match c {
            'A' => Node::Assert(Assert::BeginText),
            'z' => Node::Assert(Assert::EndText),
            'b' => Node::Assert(Assert::WordBoundary),
            'B' => Node::Assert(Assert::NotWordBoundary),
            _ => {
                self.pos -= 1;
                let mut cl = Class {
                    icase: flags.icase,
                    ..Class::default()
                };
                match self.class_escape(&mut cl)? {
                    Some(ch) => Node::Char(Pred::Lit(ch, flags.icase)),
                    None => Node::Char(Pred::Class(cl)),
                }
            }
        })
    }

    /// Parses an escape at pos (after the backslash). Returns Some(char) for a single
    /// character, or None after adding ranges to `cl` (which may set negation for \D etc.
    /// only when `cl` is empty and standalone).
    fn class_escape(&mut self, cl: &mut Class) -> Result<Option<char>, String> {
        let Some(c) = self.peek() else {
            return Err(self.err("trailing backslash at end of expression", ""));
        };
        self.pos += 1;
        let digit = [('0', '9')];
        let word = [('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
        let space = [('\t', '\n'), ('\u{c}', '\r'), (' ', ' ')];
        match c {
            'd' => cl.ranges.extend_from_slice(&digit),
            'w' => cl.ranges.extend_from_slice(&word),
            's' => cl.ranges.extend_from_slice(&space),
            'D' => cl.ranges.extend(negate(&digit)),
            'W' => cl.ranges.extend(negate(&word)),
            'S' => cl.ranges.extend(negate(&space)),
            'p' | 'P' => {
                let name: String = if self.peek() == Some('{') {
                    self.pos += 1;
                    let mut s = String::new();
                    while let Some(ch) = self.peek() {
                        self.pos += 1;
                        if ch == '}' {
                            break;
                        }
                        s.push(ch);
                    }
                    s
                } else {
                    let ch = self.peek().unwrap_or('L');
                    self.pos += 1;
                    ch.to_string()
                };
                let ranges = unicode_class(&name).ok_or_else(|| {
                    self.err("invalid character class range", &format!("\\p{{{name}}}"))
                })?;
                if c == 'P' {
                    cl.ranges.extend(negate(&ranges));
                } else {
                    cl.ranges.extend(ranges);
                }
            }
            't' => return Ok(Some('\t')),
            'n' => return Ok(Some('\n')),
            'r' => return Ok(Some('\r')),
            'f' => return Ok(Some('\u{c}')),
            'v' => return Ok(Some('\u{b}')),
            'a' => return Ok(Some('\u{7}')),
            'x' => {
                let code = if self.peek() == Some('{') {
                    self.pos += 1;
                    let mut s = String::new();
                    while let Some(ch) = self.peek() {
                        self.pos += 1;
                        if ch == '}' {
                            break;
                        }
                        s.push(ch);
                    }
                    u32::from_str_radix(&s, 16).ok()
                } else {
                    let s: String = self.chars.iter().skip(self.pos).take(2).collect();
                    self.pos += 2;
                    u32::from_str_radix(&s, 16).ok()
                };
                return code
                    .and_then(char::from_u32)
                    .map(Some)
                    .ok_or_else(|| self.err("invalid escape sequence", "\\x"));
            }
            '0'..='7' => {
                // Octal escapes: \0, \012 ...
                let mut v = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            self.pos += 1;
                        }
                        None => break,
                    }
                }
                return Ok(char::from_u32(v));
            }
            c if c.is_ascii_punctuation() => return Ok(Some(c)),
            c => return Err(self.err("invalid escape sequence", &format!("\\{c}"))),
        }
        Ok(None)
    }

    fn parse_class(&mut self, flags: &Flags) -> Result<Class, String> {
        let start = self.pos - 1;
        let mut cl = Class {
            icase: flags.icase,
            ..Class::default()
        };
        if self.peek() == Some('^') {
            cl.negated = true;
            self.pos += 1;
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                let text: String = self.chars[start..].iter().collect();
                return Err(self.err("missing closing ]", &text));
            };
            if c == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            if c == '[' && self.chars.get(self.pos + 1) == Some(&':') {
                // POSIX class [:alpha:]
                let rest: String = self.chars[self.pos..].iter().collect();
                if let Some(end) = rest.get(2..).and_then(|r| r.find(":]")).map(|i| i + 2) {
                    let name = &rest[2..end];
                    let (neg, name) = match name.strip_prefix('^') {
                        Some(n) => (true, n),
                        None => (false, name),
                    };
                    let ranges = posix_class(name).ok_or_else(|| {
                        self.err("invalid character class range", &rest[..end + 2])
                    })?;
                    if neg {
                        cl.ranges.extend(negate(&ranges));
                    } else {
                        cl.ranges.extend(ranges);
                    }
                    self.pos += rest[..end + 2].chars().count();
                    continue;
                }
            }
            let lo = if c == '\\' {
                self.pos += 1;
                match self.class_escape(&mut cl)? {
                    Some(ch) => ch,
                    None => continue,
                }
            } else {
                self.pos += 1;
                c
            };
            // Range?
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                let hc = self.peek().unwrap_or('\0');
                self.pos += 1;
                let hi = if hc == '\\' {
                    let mut tmp = Class::default();
                    match self.class_escape(&mut tmp)? {
                        Some(ch) => ch,
                        None => return Err(self.err("invalid character class range", "-")),
                    }
                } else {
                    hc
                };
                if hi < lo {
                    return Err(self.err("invalid character class range", &format!("{lo}-{hi}")));
                }
                cl.ranges.push((lo, hi));
            } else {
                cl.ranges.push((lo, lo));
            }
        }
        Ok(cl)
    }
}

fn negate(ranges: &[(char, char)]) -> Vec<(char, char)> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut out = Vec::new();
    let mut next: u32 = 0;
    for (a, b) in sorted {
        let (a, b) = (a as u32, b as u32);
        if a > next
            && let (Some(x), Some(y)) = (char::from_u32(next), prev_char(a))
        {
            out.push((x, y));
        }
        next = next.max(b + 1);
    }
    if next <= 0x10ffff
        && let Some(x) = char::from_u32(next).or_else(|| char::from_u32(0xe000))
    {
        out.push((x, '\u{10ffff}'));
    }
    out
}

fn prev_char(u: u32) -> Option<char> {
    let mut p = u.checked_sub(1)?;
    if (0xd800..0xe000).contains(&p) {
        p = 0xd7ff;
    }
    char::from_u32(p)
}

fn posix_class(name: &str) -> Option<Vec<(char, char)>> {
    Some(match name {
        "alnum" => vec![('0', '9'), ('A', 'Z'), ('a', 'z')],
        "alpha" => vec![('A', 'Z'), ('a', 'z')],
        "ascii" => vec![('\0', '\u{7f}')],
        "blank" => vec![('\t', '\t'), (' ', ' ')],
        "cntrl" => vec![('\0', '\u{1f}'), ('\u{7f}', '\u{7f}')],
        "digit" => vec![('0', '9')],
        "graph" => vec![('!', '~')],
        "lower" => vec![('a', 'z')],
        "print" => vec![(' ', '~')],
        "punct" => vec![('!', '/'), (':', '@'), ('[', '`'), ('{', '~')],
        "space" => vec![('\t', '\r'), (' ', ' ')],
        "upper" => vec![('A', 'Z')],
        "word" => vec![('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
        "xdigit" => vec![('0', '9'), ('A', 'F'), ('a', 'f')],
        _ => return None,
    })
}

/// Rough Unicode categories (Latin, Greek, Cyrillic and CJK blocks cover what schemas use).
fn unicode_class(name: &str) -> Option<Vec<(char, char)>> {
    let letters = vec![
        ('A', 'Z'),
        ('a', 'z'),
        ('\u{aa}', '\u{aa}'),
        ('\u{b5}', '\u{b5}'),
        ('\u{ba}', '\u{ba}'),
        ('\u{c0}', '\u{d6}'),
        ('\u{d8}', '\u{f6}'),
        ('\u{f8}', '\u{2c1}'),
        ('\u{370}', '\u{3ff}'),
        ('\u{400}', '\u{52f}'),
        ('\u{4e00}', '\u{9fff}'),
    ];
    Some(match name {
        "L" => letters,
        "Lu" => vec![('A', 'Z'), ('\u{c0}', '\u{d6}'), ('\u{d8}', '\u{de}')],
        "Ll" => vec![('a', 'z'), ('\u{df}', '\u{f6}'), ('\u{f8}', '\u{ff}')],
        "N" | "Nd" => vec![('0', '9'), ('\u{660}', '\u{669}'), ('\u{ff10}', '\u{ff19}')],
        "P" => vec![
            ('!', '#'),
            ('%', '*'),
            (',', '/'),
            (':', ';'),
            ('?', '@'),
            ('[', ']'),
            ('_', '_'),
            ('{', '{'),
            ('}', '}'),
        ],
        "Z" | "Zs" => vec![
            (' ', ' '),
            ('\u{a0}', '\u{a0}'),
            ('\u{2000}', '\u{200a}'),
            ('\u{3000}', '\u{3000}'),
        ],
        "Greek" => vec![('\u{370}', '\u{3ff}')],
        "Latin" => vec![('A', 'Z'), ('a', 'z'), ('\u{c0}', '\u{24f}')],
        "Han" => vec![('\u{4e00}', '\u{9fff}')],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::Regex;

    fn m(p: &str, s: &str) -> bool {
        Regex::new(p).unwrap().is_match(s)
    }

    #[test]
    fn basics() {
        assert!(m("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "tor1-01"));
        assert!(!m("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "Tor1"));
        assert!(!m("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "-x"));
        assert!(m("abc", "xxabcxx"));
        assert!(!m("^abc$", "xxabcxx"));
        assert!(m(
            r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$",
            "* * * * */5"
        ));
        assert!(!m(r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$", "* * * *"));
        assert!(m(r"^\d{1,3}$", "123"));
        assert!(!m(r"^\d{1,3}$", "1234"));
        assert!(m("(?i)^abc$", "ABC"));
        assert!(m(r"^[^/]+$", "abc"));
        assert!(!m(r"^[^/]+$", "a/c"));
        assert!(m(r"^[[:alpha:]]+$", "abc"));
        assert!(m(r"\bfoo\b", "a foo b"));
        assert!(!m(r"\bfoo\b", "afoob"));
        assert!(m("a|b|c", "c"));
        assert!(m("^$", ""));
        assert!(m("^a.c$", "abc"));
        assert!(!m("^a.c$", "a\nc"));
        assert!(m("^(a+)+$", &"a".repeat(5000)));
        assert!(!m("^(a+)+$", &format!("{}b", "a".repeat(5000))));
        assert!(m(r"^\x41\.$", "A."));
        assert!(m("x{2}", "axxb"));
        assert!(m("a{,2}", "a{,2}"));
        assert!(m("^[[:digit:]]+$", "42"));
        assert!(Regex::new("[[:]").is_ok() || Regex::new("[[:]").is_err());
    }

    #[test]
    fn errors() {
        assert!(Regex::new("(abc").is_err());
        assert!(Regex::new("abc)").is_err());
        assert!(Regex::new("[abc").is_err());
        assert!(Regex::new("*a").is_err());
        assert!(Regex::new("a**").is_err());
        assert!(Regex::new("a{1001}").is_err());
        assert!(Regex::new(r"\q").is_err());
    }
}

#[cfg(test)]
mod robustness {
    use super::Regex;

    #[test]
    fn odd_patterns_do_not_panic() {
        for p in [
            "",
            "[",
            "]",
            "[]",
            "[]a]",
            "[^]",
            "(",
            ")",
            "(?",
            "(?P",
            "(?P<n",
            "(?i",
            "\\",
            "\\x",
            "\\x{",
            "\\x{zz}",
            "\\p",
            "\\p{",
            "\\p{Nope}",
            "[[:",
            "[[:]",
            "[[:nope:]]",
            "[a-",
            "[z-a]",
            "a{",
            "a{1",
            "a{1,",
            "a{2,1}",
            "((((((((((a))))))))))",
            "(a{1000}){1000}",
            "é+",
            "[é-ü]+",
            "\\0\\07\\077",
            "x*?",
            "x+?",
            "(?-i)a",
        ] {
            if let Ok(r) = Regex::new(p) {
                let _ = r.is_match("some text é ü 123");
            }
        }
    }
}
