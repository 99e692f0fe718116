// RE2 regular expressions inside a script's JavaScript context, for KFL's regexes (kfl.js).
//
// The workers and the hub run KFL regexes with RE2 (shark/regex.py, google-re2): linear time
// in the text, and a clear refusal of what RE2 cannot run that way. A script's kfl.match must
// answer the same and be as safe, but it cannot call RE2: quickjs refuses calls from JS into
// Python while a time limit is set, and every hook runs under one. JavaScript's RegExp
// backtracks ("(a|aa)+$" takes seconds at 35 characters), so this file is RE2 in JS:
//   - the parser follows RE2's parse.cc (Perl mode, the options shark/regex.py sets) case for
//     case, with its error texts and fragments, which compile() turns into shark/regex.py's
//     messages and positions (the same _refusal, _unclosed and _translate);
//   - the matcher is a Thompson NFA run as a lazily built DFA (RE2's own approach): each step
//     is a table lookup once a state was seen, the work per character is bounded by the size
//     of the program, and nothing backtracks. Matching only says yes or no, which is all KFL
//     asks (search, match at the start, full match, match at the end).
// Known differences at the edges: the memory budget is estimated (RE2 counts UTF-8 byte
// ranges; here a class has a weight), case folding uses JavaScript's toLowerCase/toUpperCase
// (RE2 uses Unicode's simple folding orbits), and quickjs's Unicode tables lack the scripts
// of Unicode 14 and 15 (accepted, matching nothing). tests/unit/test_kfl_regex.py compares
// both sides on patterns and texts.
var __re2 = (function () {
  "use strict";

  function RegexError(message, position) {
    this.message = message;
    this.position = position;
  }

  // -- shark/regex.py's unsupported(): what RE2 refuses, said as the workers say it ----------
  var WHY = "RE2 runs in linear time and has no backreferences or lookaround";
  var GROUPS = [["(?<=", "lookbehind (?<=...)"], ["(?<!", "negative lookbehind (?<!...)"],
    ["(?P=", "a named backreference (?P=name)"], ["(?=", "lookahead (?=...)"],
    ["(?!", "negative lookahead (?!...)"], ["(?>", "an atomic group (?>...)"]];

  function unsupported(source) {
    var index = 0, inSet = false, previous = "", quantifiers = "*+?}";
    while (index < source.length) {
      var ch = source.charAt(index);
      if (ch === "\\") {
        var following = source.charAt(index + 1);
        if (!inSet && following !== "" && "123456789".indexOf(following) >= 0)
          return ["a backreference \\" + following + " is not supported (" + WHY + ")", index];
        previous = "\\";
        index += 2;
        continue;
      }
      if (inSet) {
        inSet = ch !== "]";
        index += 1;
        continue;
      }
      if (ch === "[") {
        inSet = true;
        index += 1 + (source.charAt(index + 1) === "]" ? 1 : 0) + (source.substr(index + 1, 2) === "^]" ? 1 : 0);
        previous = "]";
        continue;
      }
      if (ch === "(") {
        for (var g = 0; g < GROUPS.length; g++) {
          if (source.substr(index, GROUPS[g][0].length) === GROUPS[g][0])
            return [GROUPS[g][1] + " is not supported (" + WHY + ")", index];
        }
      }
      if (ch === "+" && previous !== "" && quantifiers.indexOf(previous) >= 0)
        return ["a possessive quantifier " + previous + "+ is not supported (" + WHY + ")", index - 1];
      previous = (previous !== "" && quantifiers.indexOf(previous) >= 0 && ch === "?") ? "" : ch;
      index += 1;
    }
    return null;
  }

  // \Z (Python's end of text) is RE2's \z; the same length, so positions stay
  function translate(source) {
    if (source.indexOf("\\Z") < 0) return source;
    var out = "", index = 0;
    while (index < source.length) {
      if (source.charAt(index) === "\\" && index + 1 < source.length) {
        var pair = source.substr(index, 2);
        out += pair === "\\Z" ? "\\z" : pair;
        index += 2;
      } else {
        out += source.charAt(index);
        index += 1;
      }
    }
    return out;
  }

  // where the innermost group (or set) left open starts; 0 when none is found
  function unclosed(source, opener, closer) {
    var openAt = [], inSet = false, index = 0;
    while (index < source.length) {
      var ch = source.charAt(index);
      if (ch === "\\") { index += 2; continue; }
      if (opener === "(" && inSet) {
        inSet = ch !== "]";
      } else if (ch === opener) {
        openAt.push(index);
        if (opener === "[") break;
      } else if (opener === "(" && ch === "[") {
        inSet = true;
      } else if (ch === closer && openAt.length) {
        openAt.pop();
      }
      index += 1;
    }
    return openAt.length ? openAt[openAt.length - 1] : 0;
  }

  // RE2's error (its code's text and the fragment it names) as shark/regex.py's _refusal says it
  function refusal(source, reason, fragment) {
    if (reason === "missing )") return new RegexError("missing ), unterminated subpattern", unclosed(source, "(", ")"));
    if (reason === "missing ]") return new RegexError("missing ], unterminated character set", unclosed(source, "[", "]"));
    if (reason === "pattern too large - compile failed") return new RegexError("too complex (over RE2's memory budget)", 0);
    var position = fragment ? source.indexOf(fragment) : -1;
    return new RegexError(fragment ? reason + ": " + fragment : reason, Math.max(position, 0));
  }

  function Re2Error(reason, fragment) {   // thrown by the parser, caught by compile()
    this.reason = reason;
    this.fragment = fragment || "";
  }

  // -- character predicates ---------------------------------------------------------------
  function isWord(cp) { return (cp >= 48 && cp <= 57) || (cp >= 65 && cp <= 90) || (cp >= 97 && cp <= 122) || cp === 95; }
  function isHex(c) { return /^[0-9A-Fa-f]$/.test(c); }
  function isAlnum(cp) { return (cp >= 48 && cp <= 57) || (cp >= 65 && cp <= 90) || (cp >= 97 && cp <= 122); }

  // the code points a letter folds with (JavaScript's case mapping; RE2 uses Unicode's orbits)
  function variants(cp) {
    var text = String.fromCodePoint(cp), out = [cp];
    [text.toLowerCase(), text.toUpperCase()].forEach(function (other) {
      var code = other.codePointAt(0);
      if (other.length === String.fromCodePoint(code).length && out.indexOf(code) < 0) out.push(code);
    });
    return out;
  }

  // A class item: {lo, hi} ranges or a test; `sign` -1 negates the item as RE2's groups do.
  var PERL = {d: [[48, 57]], s: [[9, 10], [12, 13], [32, 32]], w: [[48, 57], [65, 90], [95, 95], [97, 122]]};
  var POSIX = {
    alnum: [[48, 57], [65, 90], [97, 122]], alpha: [[65, 90], [97, 122]], ascii: [[0, 127]],
    blank: [[9, 9], [32, 32]], cntrl: [[0, 31], [127, 127]], digit: [[48, 57]], graph: [[33, 126]],
    lower: [[97, 122]], print: [[32, 126]], punct: [[33, 47], [58, 64], [91, 96], [123, 126]],
    space: [[9, 13], [32, 32]], upper: [[65, 90]], word: [[48, 57], [65, 90], [95, 95], [97, 122]],
    xdigit: [[48, 57], [65, 70], [97, 102]]
  };
  var CATEGORIES = "C Cc Cf Co Cs L Ll Lm Lo Lt Lu M Mc Me Mn N Nd Nl No P Pc Pd Pe Pf Pi Po Ps S Sc Sk Sm So Z Zl Zp Zs".split(" ");
  // RE2's script names (its unicode_groups.cc, the google-re2 the hub installs)
  var SCRIPTS = ("Adlam Ahom Anatolian_Hieroglyphs Arabic Armenian Avestan Balinese Bamum Bassa_Vah Batak Bengali " +
    "Bhaiksuki Bopomofo Brahmi Braille Buginese Buhid Canadian_Aboriginal Carian Caucasian_Albanian Chakma Cham " +
    "Cherokee Chorasmian Common Coptic Cuneiform Cypriot Cypro_Minoan Cyrillic Deseret Devanagari Dives_Akuru Dogra " +
    "Duployan Egyptian_Hieroglyphs Elbasan Elymaic Ethiopic Georgian Glagolitic Gothic Grantha Greek Gujarati " +
    "Gunjala_Gondi Gurmukhi Han Hangul Hanifi_Rohingya Hanunoo Hatran Hebrew Hiragana Imperial_Aramaic Inherited " +
    "Inscriptional_Pahlavi Inscriptional_Parthian Javanese Kaithi Kannada Katakana Kawi Kayah_Li Kharoshthi " +
    "Khitan_Small_Script Khmer Khojki Khudawadi Lao Latin Lepcha Limbu Linear_A Linear_B Lisu Lycian Lydian " +
    "Mahajani Makasar Malayalam Mandaic Manichaean Marchen Masaram_Gondi Medefaidrin Meetei_Mayek Mende_Kikakui " +
    "Meroitic_Cursive Meroitic_Hieroglyphs Miao Modi Mongolian Mro Multani Myanmar Nabataean Nag_Mundari " +
    "Nandinagari New_Tai_Lue Newa Nko Nushu Nyiakeng_Puachue_Hmong Ogham Ol_Chiki Old_Hungarian Old_Italic " +
    "Old_North_Arabian Old_Permic Old_Persian Old_Sogdian Old_South_Arabian Old_Turkic Old_Uyghur Oriya Osage " +
    "Osmanya Pahawh_Hmong Palmyrene Pau_Cin_Hau Phags_Pa Phoenician Psalter_Pahlavi Rejang Runic Samaritan " +
    "Saurashtra Sharada Shavian Siddham SignWriting Sinhala Sogdian Sora_Sompeng Soyombo Sundanese Syloti_Nagri " +
    "Syriac Tagalog Tagbanwa Tai_Le Tai_Tham Tai_Viet Takri Tamil Tangsa Tangut Telugu Thaana Thai Tibetan " +
    "Tifinagh Tirhuta Toto Ugaritic Vai Vithkuqi Wancho Warang_Citi Yezidi Yi Zanabazar_Square").split(" ");

  // a Unicode group as a test of one code point, or null when RE2 does not know the name
  function unicodeGroup(name) {
    if (name === "Any") return {test: function () { return true; }, weight: 10};
    var property;
    if (name === "C") property = "gc=Cc}|\\p{gc=Cf}|\\p{gc=Co}|\\p{gc=Cs";   // RE2's C has no unassigned
    else if (CATEGORIES.indexOf(name) >= 0) property = "gc=" + name;
    else if (SCRIPTS.indexOf(name) >= 0) property = "sc=" + name;
    else return null;
    var pattern;
    try {
      pattern = new RegExp("^(?:\\p{" + property + "})$", "u");
    } catch (error) {   // a script newer than quickjs's tables: known to RE2, matches nothing here
      return {test: function () { return false; }, weight: 150};
    }
    var weight = name.length === 1 ? 1500 : CATEGORIES.indexOf(name) >= 0 ? 900 : 150;
    return {test: function (cp) { return pattern.test(String.fromCodePoint(cp)); }, weight: weight};
  }

  // A class: items (each {ranges} or {test}, with a sign) under RE2's flags at the time.
  function CharClass(fold) {
    this.items = [];
    this.fold = fold;
    this.negated = false;
  }
  CharClass.prototype.ranges = function (ranges, sign) { this.items.push({ranges: ranges, sign: sign}); return this; };
  CharClass.prototype.group = function (group, sign) { this.items.push({test: group.test, weight: group.weight, sign: sign}); return this; };
  CharClass.prototype.has = function (cp) {
    for (var i = 0; i < this.items.length; i++) {
      var item = this.items[i], hit = false;
      var codes = this.fold ? variants(cp) : [cp];
      for (var v = 0; v < codes.length && !hit; v++) {
        if (item.test) {
          hit = item.test(codes[v]);
        } else {
          for (var r = 0; r < item.ranges.length && !hit; r++) hit = codes[v] >= item.ranges[r][0] && codes[v] <= item.ranges[r][1];
        }
      }
      // a negated group under (?i) is the complement of its folded set (RE2's AddUGroup)
      if (hit !== (item.sign < 0)) return !this.negated;
    }
    return this.negated;
  };
  // an estimate of RE2's instructions for the class (UTF-8 byte ranges), for the memory budget
  CharClass.prototype.weight = function () {
    var ascii = 0, wide = this.negated, heavy = 0;
    this.items.forEach(function (item) {
      if (item.test) { heavy += item.weight; return; }
      if (item.sign < 0) wide = true;
      item.ranges.forEach(function (r) { ascii++; if (r[1] > 127) wide = true; });
    });
    return heavy + ascii + (ascii > 1 ? 1 : 0) + (wide ? 9 : 0);
  };
  function single(cp, fold) {
    var codes = fold ? variants(cp) : [cp];
    return {t: "char", test: function (c) { return codes.indexOf(c) >= 0 || (fold && variants(c).some(function (v) { return codes.indexOf(v) >= 0; })); },
            weight: cp < 128 ? 1 : 3, literal: fold ? null : String.fromCodePoint(cp)};
  }
  function classNode(cc) { return {t: "char", test: function (cp) { return cc.has(cp); }, weight: cc.weight()}; }

  // -- the parser (RE2's parse.cc in Perl mode) ---------------------------------------------
  var MAX_REPEAT = 1000;

  function cpAt(s, i) { return s.codePointAt(i); }
  function cpLen(cp) { return cp > 0xffff ? 2 : 1; }

  // RE2's ParseEscape at s[i] === "\\": {cp, end}
  function escape(s, i) {
    var n = s.length;
    if (i + 1 >= n) throw new Re2Error("trailing \\");
    var c = cpAt(s, i + 1), j = i + 1 + cpLen(c), ch = String.fromCodePoint(c);
    function bad() { throw new Re2Error("invalid escape sequence", s.slice(i, j)); }
    if (c < 128 && !isAlnum(c)) return {cp: c, end: j};
    if (ch >= "1" && ch <= "7") {
      if (j >= n || s[j] < "0" || s[j] > "7") bad();
    }
    if (ch >= "0" && ch <= "7") {
      var code = c - 48;
      if (j < n && s[j] >= "0" && s[j] <= "7") {
        code = code * 8 + (s.charCodeAt(j) - 48); j++;
        if (j < n && s[j] >= "0" && s[j] <= "7") { code = code * 8 + (s.charCodeAt(j) - 48); j++; }
      }
      return {cp: code, end: j};
    }
    if (ch === "x") {
      if (j >= n) bad();
      var x = cpAt(s, j);
      j += cpLen(x);
      if (x === 123) {   // "{": any number of hex digits, at least one
        if (j >= n) throw new Re2Error("invalid UTF-8");
        x = cpAt(s, j); j += cpLen(x);
        var digits = 0, value = 0;
        while (x < 128 && isHex(String.fromCharCode(x))) {
          digits++;
          value = value * 16 + parseInt(String.fromCharCode(x), 16);
          if (value > 0x10ffff) bad();
          if (j >= n) bad();
          x = cpAt(s, j); j += cpLen(x);
        }
        if (x !== 125 || digits === 0) bad();
        return {cp: value, end: j};
      }
      if (j >= n) bad();
      var y = cpAt(s, j);
      j += cpLen(y);
      if (x >= 128 || y >= 128 || !isHex(String.fromCharCode(x)) || !isHex(String.fromCharCode(y))) bad();
      return {cp: parseInt(String.fromCharCode(x, y), 16), end: j};
    }
    var simple = {n: 10, r: 13, t: 9, a: 7, f: 12, v: 11}[ch];
    if (simple !== undefined) return {cp: simple, end: j};
    bad();
  }

  // \pN, \p{Name}, \PN, \p{^Name} at s[i] === "\\": {group, sign, end}
  function unicodeClass(s, i) {
    var sign = s[i + 1] === "P" ? -1 : 1, j = i + 2, name;
    if (j >= s.length) throw new Re2Error("invalid character class range", s.slice(i, j));
    var c = cpAt(s, j);
    if (c !== 123) {
      name = String.fromCodePoint(c);
      j += cpLen(c);
    } else {
      var close = s.indexOf("}", j + 1);
      if (close < 0) throw new Re2Error("invalid character class range", s.slice(i));
      name = s.slice(j + 1, close);
      j = close + 1;
    }
    var seq = s.slice(i, j);
    if (name.charAt(0) === "^") { sign = -sign; name = name.slice(1); }
    var group = unicodeGroup(name);
    if (group === null) throw new Re2Error("invalid character class range", seq);
    return {group: group, sign: sign, end: j};
  }

  // RE2's ParseCharClass at s[i] === "[": {node, end}
  function charClass(s, i, flags) {
    var n = s.length, whole = s.slice(i), j = i + 1, cc = new CharClass(flags.i);
    if (j < n && s[j] === "^") { cc.negated = true; j++; }
    var first = true;
    function ccChar(at) {
      if (at >= n) throw new Re2Error("missing ]", whole);
      if (s[at] === "\\") return escape(s, at);
      var c = cpAt(s, at);
      return {cp: c, end: at + cpLen(c)};
    }
    while (j < n && (s[j] !== "]" || first)) {
      first = false;
      if (n - j > 2 && s[j] === "[" && s[j + 1] === ":") {
        var close = s.indexOf(":]", j + 2);
        if (close >= 0) {
          var name = s.slice(j + 2, close), sign = 1;
          if (name.charAt(0) === "^") { sign = -1; name = name.slice(1); }
          if (!Object.prototype.hasOwnProperty.call(POSIX, name)) {
            throw new Re2Error("invalid character class range", s.slice(j, close + 2));
          }
          cc.ranges(POSIX[name], sign);
          j = close + 2;
          continue;
        }
      }
      if (n - j > 2 && s[j] === "\\" && (s[j + 1] === "p" || s[j + 1] === "P")) {
        var unicode = unicodeClass(s, j);
        cc.group(unicode.group, unicode.sign);
        j = unicode.end;
        continue;
      }
      if (s[j] === "\\" && j + 1 < n && "dDsSwW".indexOf(s[j + 1]) >= 0) {
        cc.ranges(PERL[s[j + 1].toLowerCase()], s[j + 1] === s[j + 1].toLowerCase() ? 1 : -1);
        j += 2;
        continue;
      }
      var lo = ccChar(j), hi = lo;
      if (n - lo.end >= 2 && s[lo.end] === "-" && s[lo.end + 1] !== "]") {
        hi = ccChar(lo.end + 1);
        if (hi.cp < lo.cp) throw new Re2Error("invalid character class range", s.slice(j, hi.end));
      }
      cc.ranges([[lo.cp, hi.cp]], 1);
      j = hi.end;
    }
    if (j >= n) throw new Re2Error("missing ]", whole);
    return {node: classNode(cc), end: j + 1};
  }

  // RE2's MaybeParseRepeat at s[i] === "{": {lo, hi, end} or null ({ is then a literal)
  function countedRepeat(s, i) {
    var m = /^\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}/.exec(s.slice(i, i + 40));
    if (m === null || m[1].length > 9 || (m[3] && m[3].length > 9)) return null;   // RE2 stops at 10 digits
    var lo = parseInt(m[1], 10), hi = m[2] ? (m[3] === undefined ? -1 : parseInt(m[3], 10)) : lo;
    return {lo: lo, hi: hi, end: i + m[0].length};
  }

  // RE2's RepetitionWalker: nested counted repetitions may not multiply past 1000. Walked
  // with a stack of our own, as everything over the tree here: quickjs's stack holds only a
  // few hundred calls, and RE2 takes patterns nested thousands deep.
  function repeatBudget(root) {
    var least = MAX_REPEAT, todo = [[root, MAX_REPEAT]];
    while (todo.length) {
      var top = todo.pop(), node = top[0], budget = top[1];
      if (node.t === "rep" && node.counted) {
        var m = node.max < 0 ? node.min : node.max;
        if (m > 0) budget = Math.floor(budget / m);
      }
      least = Math.min(least, budget);
      (node.items || (node.sub ? [node.sub] : [])).forEach(function (child) { todo.push([child, budget]); });
    }
    return least;
  }

  function parse(s) {
    var n = s.length, i = 0, flags = {i: false, m: false, s: false};
    var frame = {branches: [], items: [], saved: null}, stack = [], lastRepeat = -1;

    function push(node) { frame.items.push(node); }
    function repeat(min, max, start, end, counted) {
      var op = s.slice(start, end);
      if (counted && ((max !== -1 && max < min) || min > MAX_REPEAT || max > MAX_REPEAT)) {
        throw new Re2Error("invalid repetition size", op);
      }
      if (!frame.items.length) throw new Re2Error("no argument for repetition operator", op);
      var node = {t: "rep", min: min, max: max, sub: frame.items.pop(), counted: counted};
      frame.items.push(node);
      if (counted && (min >= 2 || max >= 2) && repeatBudget(node) === 0) {
        throw new Re2Error("invalid repetition size", op);
      }
    }
    function open(saved) {
      stack.push(frame);
      frame = {branches: [], items: [], saved: saved};
    }
    function group() { return alternation(frame.branches.concat([concat(frame.items)])); }

    // RE2's ParsePerlFlags at s[i] === "(" and s[i + 1] === "?": returns the index after it
    function perlFlags() {
      var t = i + 2;
      if ((n - i > 4 && s[i + 2] === "P" && s[i + 3] === "<") || (n - i > 3 && s[i + 2] === "<")) {
        var begin = s[i + 2] === "P" ? i + 4 : i + 3, close = s.indexOf(">", i + 2);
        if (close < 0) throw new Re2Error("invalid named capture group", s.slice(i));
        if (!/^[A-Za-z0-9_]+$/.test(s.slice(begin, close))) throw new Re2Error("invalid named capture group", s.slice(i, close + 1));
        open({i: flags.i, m: flags.m, s: flags.s});
        return close + 1;
      }
      var next = {i: flags.i, m: flags.m, s: flags.s}, negated = false, sawFlag = false;
      function bad() { throw new Re2Error("invalid perl operator", s.slice(i, t)); }
      for (;;) {
        if (t >= n) bad();
        var c = cpAt(s, t);
        t += cpLen(c);
        var ch = String.fromCodePoint(c);
        if (ch === "i" || ch === "m" || ch === "s" || ch === "U") {
          sawFlag = true;
          if (ch !== "U") next[ch] = !negated;
        } else if (ch === "-") {
          if (negated) bad();
          negated = true;
          sawFlag = false;   // negating nothing is an error: (?-) and (?-:...)
        } else if (ch === ":") {
          if (negated && !sawFlag) bad();
          open({i: flags.i, m: flags.m, s: flags.s});
          flags = next;
          return t;
        } else if (ch === ")") {
          if (negated && !sawFlag) bad();
          flags = next;
          return t;
        } else {
          bad();
        }
      }
    }

    while (i < n) {
      var isRepeat = -1, c = s[i], start = i;
      if (c === "(") {
        if (s[i + 1] === "?") {
          i = perlFlags();
        } else {
          open({i: flags.i, m: flags.m, s: flags.s});
          i++;
        }
      } else if (c === "|") {
        frame.branches.push(concat(frame.items));
        frame.items = [];
        i++;
      } else if (c === ")") {
        if (!stack.length) throw new Re2Error("unexpected )", s);
        var node = group();
        flags = frame.saved;
        frame = stack.pop();
        push(node);   // a group is its content: nothing here captures
        i++;
      } else if (c === "^") {
        push({t: "assert", k: flags.m ? "bol" : "bot"}); i++;
      } else if (c === "$") {
        push({t: "assert", k: flags.m ? "eol" : "eot"}); i++;
      } else if (c === ".") {
        var dotAll = flags.s;
        push({t: "char", test: function (cp) { return dotAll || cp !== 10; }, weight: dotAll ? 10 : 12}); i++;
      } else if (c === "[") {
        var parsed = charClass(s, i, flags);
        push(parsed.node);
        i = parsed.end;
      } else if (c === "*" || c === "+" || c === "?") {
        i++;
        if (s[i] === "?") i++;
        if (lastRepeat >= 0) throw new Re2Error("bad repetition operator", s.slice(lastRepeat, i));
        repeat(c === "+" ? 1 : 0, c === "?" ? 1 : -1, start, i, false);
        isRepeat = start;
      } else if (c === "{") {
        var counted = countedRepeat(s, i);
        if (counted === null) {
          push(single(123, flags.i)); i++;
        } else {
          i = counted.end;
          if (s[i] === "?") i++;
          if (lastRepeat >= 0) throw new Re2Error("bad repetition operator", s.slice(lastRepeat, i));
          repeat(counted.lo, counted.hi, start, i, true);
          isRepeat = start;
        }
      } else if (c === "\\") {
        var e = s[i + 1];
        if (e === "b" || e === "B") {
          push({t: "assert", k: e === "b" ? "wb" : "nwb"}); i += 2;
        } else if (e === "A" || e === "z") {
          push({t: "assert", k: e === "A" ? "bot" : "eot"}); i += 2;
        } else if (e === "C") {   // any byte in RE2; any character here
          push({t: "char", test: function () { return true; }, weight: 4}); i += 2;
        } else if (e === "Q") {   // \Q...\E: literals
          i += 2;
          while (i < n) {
            if (s[i] === "\\" && s[i + 1] === "E") { i += 2; break; }
            var q = cpAt(s, i);
            push(single(q, flags.i));
            i += cpLen(q);
          }
        } else if (e === "p" || e === "P") {
          var unicode = unicodeClass(s, i);
          push(classNode(new CharClass(flags.i).group(unicode.group, unicode.sign)));
          i = unicode.end;
        } else if (e !== undefined && "dDsSwW".indexOf(e) >= 0) {
          push(classNode(new CharClass(flags.i).ranges(PERL[e.toLowerCase()], e === e.toLowerCase() ? 1 : -1)));
          i += 2;
        } else {
          var escaped = escape(s, i);
          push(single(escaped.cp, flags.i));
          i = escaped.end;
        }
      } else {
        var literal = cpAt(s, i);
        push(single(literal, flags.i));
        i += cpLen(literal);
      }
      lastRepeat = isRepeat;
    }
    if (stack.length) throw new Re2Error("missing )", s);
    return group();
  }

  function concat(items) { return items.length === 1 ? items[0] : {t: "cat", items: items}; }
  function alternation(branches) { return branches.length === 1 ? branches[0] : {t: "alt", items: branches}; }

  // -- the program ------------------------------------------------------------------------
  // RE2's budget: max_mem 8 MiB (shark/regex.py MAX_MEM), two thirds for the program, in
  // instructions as RE2 counts them (measured: 698,992 literal characters fit)
  var BUDGET = 699000;
  var CHAR = 0, SPLIT = 1, JUMP = 2, ASSERT = 3, MATCH = 4;
  var ASSERTS = {bot: 0, eot: 1, bol: 2, eol: 3, wb: 4, nwb: 5};

  // the copies a repetition is compiled to (x{2,4}: four, x*: one, x{2,}: two)
  function copies(node) { return node.max < 0 ? Math.max(node.min, 1) : node.max; }
  function children(node) {
    if (node.t === "cat" || node.t === "alt") return node.items;
    if (node.t === "rep") return new Array(copies(node)).fill(node.sub);
    return [];
  }

  // Post-order over the tree without recursion: combine(node, values of its children) for
  // every node, children (a repetition's copies each on its own) before their parent.
  function postOrder(root, combine) {
    var stack = [{node: root, kids: children(root), i: 0, values: []}];
    for (;;) {
      var top = stack[stack.length - 1];
      if (top.i < top.kids.length) {
        var child = top.kids[top.i++];
        stack.push({node: child, kids: children(child), i: 0, values: []});
        continue;
      }
      stack.pop();
      var value = combine(top.node, top.values);
      if (!stack.length) return value;
      stack[stack.length - 1].values.push(value);
    }
  }

  // RE2's size of the program, estimated (compile() refuses past BUDGET before emitting)
  function weight(root) {
    var memo = new Map(), stack = [root];
    while (stack.length) {   // a shared sub-tree (a repetition's copies) is weighed once
      var node = stack[stack.length - 1];
      if (memo.has(node)) { stack.pop(); continue; }
      var pending = (node.t === "rep" ? [node.sub] : node.items || []).filter(function (c) { return !memo.has(c); });
      if (pending.length) { Array.prototype.push.apply(stack, pending); continue; }
      stack.pop();
      var w;
      if (node.t === "char") w = node.weight;
      else if (node.t === "assert") w = 1;
      else if (node.t === "cat") w = node.items.reduce(function (sum, c) { return sum + memo.get(c); }, 0);
      else if (node.t === "alt") w = node.items.reduce(function (sum, c) { return sum + memo.get(c) + 1; }, 0);
      else w = copies(node) * (memo.get(node.sub) + 1);
      memo.set(node, w);
    }
    return memo.get(root);
  }

  // Thompson's construction: each node a fragment {start, outs} whose outs (holes: an
  // instruction and which of its two exits) are patched to what follows it
  function Program() {
    this.op = []; this.x = []; this.y = []; this.tests = []; this.asserts = false;
  }
  Program.prototype.emit = function (op, x, y) {
    this.op.push(op); this.x.push(x); this.y.push(y);
    return this.op.length - 1;
  };
  Program.prototype.patch = function (outs, to) {
    for (var i = 0; i < outs.length; i++) this[outs[i][1]][outs[i][0]] = to;
  };
  Program.prototype.fragment = function (node, parts) {
    var pc, self = this;
    if (node.t === "char") {
      self.tests.push(node.test);
      pc = self.emit(CHAR, -1, self.tests.length - 1);
      return {start: pc, outs: [[pc, "x"]]};
    }
    if (node.t === "assert") {
      self.asserts = true;
      pc = self.emit(ASSERT, -1, ASSERTS[node.k]);
      return {start: pc, outs: [[pc, "x"]]};
    }
    if (!parts.length) {   // the empty string (an empty group, x{0})
      pc = self.emit(JUMP, -1, 0);
      return {start: pc, outs: [[pc, "x"]]};
    }
    if (node.t === "alt") {
      var entry = parts[parts.length - 1].start, outs = [];
      for (var b = parts.length - 2; b >= 0; b--) entry = self.emit(SPLIT, parts[b].start, entry);
      parts.forEach(function (part) { outs = outs.concat(part.outs); });
      return {start: entry, outs: outs};
    }
    if (node.t === "rep" && node.max < 0) {   // x{min,}: the last copy loops (x* when min is 0)
      var last = parts[parts.length - 1], loop = self.emit(SPLIT, last.start, -1);
      self.patch(last.outs, loop);
      var chain = self.chain(parts.slice(0, -1), last.start);
      return {start: node.min === 0 ? loop : chain, outs: [[loop, "y"]]};
    }
    if (node.t === "rep") {   // x{min,max}: min copies, then max - min nested optional ones
      var optional = parts.slice(node.min), holes = [], next = -1;
      for (var o = optional.length - 1; o >= 0; o--) {   // take copy o (then maybe o + 1), or stop
        var split = self.emit(SPLIT, optional[o].start, -1);
        holes.push([split, "y"]);
        if (next < 0) holes = holes.concat(optional[o].outs);
        else self.patch(optional[o].outs, next);
        next = split;
      }
      if (!node.min) return {start: next, outs: holes};
      var mandatory = parts.slice(0, node.min), tail = mandatory[mandatory.length - 1];
      if (next >= 0) self.patch(tail.outs, next);
      return {start: self.chain(mandatory.slice(0, -1), tail.start), outs: next >= 0 ? holes : tail.outs};
    }
    var first = parts[0].start;   // cat
    for (var i = 0; i + 1 < parts.length; i++) self.patch(parts[i].outs, parts[i + 1].start);
    return {start: first, outs: parts[parts.length - 1].outs};
  };
  // parts one after the other, then `then`; the entry
  Program.prototype.chain = function (parts, then) {
    for (var i = parts.length - 1; i >= 0; i--) { this.patch(parts[i].outs, then); then = parts[i].start; }
    return then;
  };
  Program.prototype.compile = function (tree, match) {
    var self = this, whole = postOrder(tree, function (node, parts) { return self.fragment(node, parts); });
    self.patch(whole.outs, match);
    return whole.start;
  };

  // -- matching: a DFA built as the text asks for it ----------------------------------------
  // cached sets per matcher; past it the cache starts over, as RE2's does. A state costs a
  // few KB here (its transitions), and a script's context has 64 MiB for all it keeps.
  var MAX_STATES = 1024;

  function Matcher(program, start, anchored, atEndOnly, literal) {
    this.p = program;
    this.literal = anchored ? "" : literal;   // every match starts with it: indexOf finds where
    this.start = start;
    this.anchored = anchored;      // threads start at position 0 only
    this.atEndOnly = atEndOnly;    // a match counts only at the end of the text
    this.reset();
  }
  Matcher.prototype.reset = function () {
    this.sets = new Map();
    this.mark = new Int32Array(this.p.op.length);
    this.generation = 0;
    this.first = this.set(this.anchored ? [this.start] : []);
  };
  // the interned set of threads waiting at these instructions (before their closure)
  Matcher.prototype.set = function (pcs) {
    if (!this.anchored) pcs.push(this.start);
    pcs.sort(function (a, b) { return a - b; });
    pcs = pcs.filter(function (pc, i) { return i === 0 || pcs[i - 1] !== pc; });
    var key = pcs.join(","), found = this.sets.get(key);
    if (found === undefined) {
      found = {pcs: pcs, closed: []};
      this.sets.set(key, found);
    }
    return found;
  };
  // the closure of a set in a context (what the empty-width assertions see): a state
  Matcher.prototype.close = function (set, context) {
    var p = this.p, chars = [], matched = false, todo = set.pcs.slice();
    var generation = ++this.generation;
    if (generation > 0x3fffffff) { this.mark.fill(0); generation = this.generation = 1; }
    while (todo.length) {
      var pc = todo.pop();
      if (this.mark[pc] === generation) continue;
      this.mark[pc] = generation;
      var op = p.op[pc];
      if (op === CHAR) chars.push(pc);
      else if (op === MATCH) matched = true;
      else if (op === SPLIT) { todo.push(p.y[pc]); todo.push(p.x[pc]); }
      else if (op === JUMP) todo.push(p.x[pc]);
      else if (holds(p.y[pc], context)) todo.push(p.x[pc]);
    }
    var state = {chars: chars, matched: matched, ascii: [], other: new Map()};
    set.closed[context] = state;
    return state;
  };
  // the set after `cp` from a state; without assertions, the next state itself (the context
  // is always 0), so that test() goes from state to state with one lookup per character
  Matcher.prototype.step = function (state, cp) {
    var p = this.p, next = [];
    for (var i = 0; i < state.chars.length; i++) {
      var pc = state.chars[i];
      if (p.tests[p.y[pc]](cp)) next.push(p.x[pc]);
    }
    // past the bound every cached state is forgotten; `state` stays usable for this text
    if (this.sets.size > MAX_STATES) this.reset();
    var set = this.set(next), to = set;
    if (!p.asserts) to = set.closed[0] || this.close(set, 0);
    if (cp < 128) state.ascii[cp] = to;
    else state.other.set(cp, to);
    return to;
  };

  // context bits: 1 start of text, 2 end of text, 4 after \n, 8 before \n, 16 after a word
  // character, 32 before one
  function holds(kind, context) {
    switch (kind) {
      case 0: return (context & 1) !== 0;
      case 1: return (context & 2) !== 0;
      case 2: return (context & 5) !== 0;
      case 3: return (context & 10) !== 0;
      case 4: return ((context & 16) !== 0) !== ((context & 32) !== 0);
      case 5: return ((context & 16) !== 0) === ((context & 32) !== 0);
    }
    return false;
  }

  Matcher.prototype.test = function (text) {
    return this.p.asserts ? this.testInContext(text) : this.testPlain(text);
  };

  // the code point at i of a JavaScript (UTF-16) string, -1 at the end; its width in `width`
  var width = 1;
  function codePoint(text, i) {
    var cp = text.charCodeAt(i);
    width = 1;
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < text.length) {
      var low = text.charCodeAt(i + 1);
      if (low >= 0xdc00 && low <= 0xdfff) { width = 2; return (cp - 0xd800) * 0x400 + (low - 0xdc00) + 0x10000; }
    }
    return cp;
  }

  // a program without assertions: states lead to states
  Matcher.prototype.testPlain = function (text) {
    var n = text.length, i = 0, first = this.first.closed[0] || this.close(this.first, 0), state = first;
    var atEndOnly = this.atEndOnly, anchored = this.anchored, literal = this.literal;
    for (;;) {
      if (state.matched && !atEndOnly) return true;
      if (state === first && literal) {   // no thread under way: skip to where one can start
        i = text.indexOf(literal, i);
        if (i < 0) return false;
      }
      if (i >= n) return state.matched;
      if (anchored && !state.chars.length) return false;
      var cp = text.charCodeAt(i), next;
      if (cp < 128) {
        next = state.ascii[cp];
        i++;
      } else {
        cp = codePoint(text, i);
        i += width;
        next = state.other.get(cp);
      }
      if (next === undefined) {
        next = this.step(state, cp);
        first = this.first.closed[0] || this.close(this.first, 0);   // anew after a reset
      }
      state = next;
    }
  };

  // with assertions: what they see (the characters on either side) is part of the state
  Matcher.prototype.testInContext = function (text) {
    var n = text.length, i = 0, set = this.first, previous = -1;
    for (;;) {
      if (set === this.first && this.literal) {
        var found = text.indexOf(this.literal, i);
        if (found < 0) return false;
        if (found > i) {
          i = found;
          previous = text.codePointAt(i - 1);
          if (previous >= 0xdc00 && previous <= 0xdfff && i >= 2) previous = text.codePointAt(i - 2);
        }
      }
      var cp = i < n ? codePoint(text, i) : -1, step = i < n ? width : 0;
      var context = (previous < 0 ? 1 : 0) | (cp < 0 ? 2 : 0) | (previous === 10 ? 4 : 0) | (cp === 10 ? 8 : 0) |
                    (previous >= 0 && isWord(previous) ? 16 : 0) | (cp >= 0 && isWord(cp) ? 32 : 0);
      var state = set.closed[context];
      if (state === undefined) state = this.close(set, context);
      if (state.matched && (!this.atEndOnly || cp < 0)) return true;
      if (cp < 0) return false;
      // RE2 runs on UTF-8 bytes: between the bytes of a character both sides are non-word and
      // not a newline, so a pattern that matches empty there (\B) matches inside any non-ASCII one
      if (cp >= 128 && !this.anchored && !this.atEndOnly &&
          (this.first.closed[0] || this.close(this.first, 0)).matched) return true;
      if (this.anchored && !state.chars.length) return false;
      var next = cp < 128 ? state.ascii[cp] : state.other.get(cp);
      set = next !== undefined ? next : this.step(state, cp);
      previous = cp;
      i += step;
    }
  };

  // A pattern: its matchers search (anywhere), prefix (at the start) and full (the whole
  // text), each answering true or false. RegexError when RE2 would refuse it.
  function compile(source) {
    var refused = unsupported(source);
    if (refused !== null) throw new RegexError(refused[0], refused[1]);
    var translated = translate(source), tree;
    try {
      tree = parse(translated);
      if (weight(tree) > BUDGET) throw new Re2Error("pattern too large - compile failed");
    } catch (error) {
      if (error instanceof Re2Error) throw refusal(source, error.reason, error.fragment);
      throw error;
    }
    // ^ (or \A) first and $ (or \z) last, outside multi-line mode, become how the matchers
    // run (only at the start, a match only at the end), so that the rest may need no context
    var items = tree.t === "cat" ? tree.items.slice() : [tree], atStart = false, atEnd = false;
    while (items.length && items[0].t === "assert" && items[0].k === "bot") { items.shift(); atStart = true; }
    while (items.length && items[items.length - 1].t === "assert" && items[items.length - 1].k === "eot") { items.pop(); atEnd = true; }
    tree = concat(items);
    var program = new Program(), match = program.emit(MATCH, 0, 0);
    var start = program.compile(tree, match), literal = atStart ? "" : leading(tree);
    var prefix = new Matcher(program, start, true, atEnd, "");
    return {
      source: source,
      search: atStart ? prefix : new Matcher(program, start, false, atEnd, literal),
      prefix: prefix,
      full: new Matcher(program, start, true, true, "")
    };
  }

  // the literal string every match begins with (case-sensitive characters outside groups)
  function leading(tree) {
    var items = tree.t === "cat" ? tree.items : [tree], literal = "";
    for (var i = 0; i < items.length && items[i].t === "char" && items[i].literal; i++) literal += items[i].literal;
    return literal;
  }

  return {RegexError: RegexError, compile: compile, unsupported: unsupported};
})();
