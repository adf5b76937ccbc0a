using System.Text;
using System.Text.RegularExpressions;

namespace eMoE.Model.Jinja;

internal enum TokenType
{
    Text,
    Number,
    String,
    Identifier,
    Equals,
    OpenParen,
    CloseParen,
    OpenStatement,
    CloseStatement,
    OpenExpression,
    CloseExpression,
    OpenBracket,
    CloseBracket,
    OpenBrace,
    CloseBrace,
    Comma,
    Dot,
    Colon,
    Pipe,
    /// <summary><c>+ - ~</c></summary>
    Additive,
    /// <summary><c>* / // %</c></summary>
    Multiplicative,
    /// <summary><c>**</c></summary>
    Power,
    /// <summary><c>&lt; &gt; &lt;= &gt;= == !=</c></summary>
    Comparison,
    /// <summary>A sign that does not start a number literal.</summary>
    Unary,
    Comment,
    End,
}

/// <summary>A token and where it starts in the original template source.</summary>
internal readonly record struct Token(TokenType Type, string Value, int Position);

/// <summary>
/// Splits a template into tokens the way @huggingface/jinja does, with transformers' settings
/// (trim_blocks and lstrip_blocks on): first the source is preprocessed (one final newline
/// dropped; blanks before <c>{%</c>/<c>{#</c> at a line start removed; the newline after
/// <c>%}</c>/<c>#}</c> removed; <c>{% generation %}</c> tags removed), then <c>{%-</c>/<c>{{-</c>/<c>{#-</c>
/// trim the text before them and <c>-%}</c>/<c>-}}</c>/<c>-#}</c> the white space after. Positions
/// are kept in terms of the original source for error messages.
/// </summary>
internal sealed partial class Lexer
{
    private static readonly (string Text, TokenType Type)[] Symbols =
    [
        ("{%", TokenType.OpenStatement), ("%}", TokenType.CloseStatement), ("{{", TokenType.OpenExpression), ("}}", TokenType.CloseExpression),
        ("(", TokenType.OpenParen), (")", TokenType.CloseParen), ("{", TokenType.OpenBrace), ("}", TokenType.CloseBrace),
        ("[", TokenType.OpenBracket), ("]", TokenType.CloseBracket), (",", TokenType.Comma), (".", TokenType.Dot),
        (":", TokenType.Colon), ("|", TokenType.Pipe),
        ("<=", TokenType.Comparison), (">=", TokenType.Comparison), ("==", TokenType.Comparison), ("!=", TokenType.Comparison),
        ("<", TokenType.Comparison), (">", TokenType.Comparison),
        ("+", TokenType.Additive), ("-", TokenType.Additive), ("~", TokenType.Additive),
        ("**", TokenType.Power), ("*", TokenType.Multiplicative), ("//", TokenType.Multiplicative), ("/", TokenType.Multiplicative),
        ("%", TokenType.Multiplicative), ("=", TokenType.Equals),
    ];

    private readonly string _source;
    private readonly string _src;
    private readonly int[] _origin;
    private readonly List<Token> _tokens = [];
    private int _pos;
    private int _braceDepth;

    private Lexer(string source)
    {
        _source = source;
        (_src, _origin) = Preprocess(source);
    }

    /// <summary>The tokens of <paramref name="source"/>, ending with an <see cref="TokenType.End"/> token.</summary>
    public static List<Token> Tokenize(string source)
    {
        var lexer = new Lexer(source);
        lexer.Run();
        lexer._tokens.Add(new Token(TokenType.End, "", source.Length));
        return lexer._tokens;
    }

    /// <summary>The preprocessed text and, for each of its characters (and its end), the offset in the original.</summary>
    internal static (string Text, int[] Origin) Preprocess(string source)
    {
        var text = new SourceText(source, [.. Enumerable.Range(0, source.Length + 1)]);
        if (source.EndsWith('\n')) text = text.Keep([(0, source.Length - 1)]);
        text = text.Remove(LeadingBlanksBeforeBlock(), _ => []);
        text = text.Remove(NewlineAfterBlock(), _ => []);
        text = text.Remove(GenerationTag(), m =>
        {
            var kept = new List<(int, int)>();
            if (m.Groups[2].Length == 0) kept.Add((m.Groups[1].Index, m.Groups[1].Length));
            if (m.Groups[3].Length == 0) kept.Add((m.Groups[4].Index, m.Groups[4].Length));
            return kept;
        });
        return (text.Text, text.Origin);
    }

    private void Run()
    {
        while (_pos < _src.Length)
        {
            var last = _tokens.Count == 0 ? (TokenType?)null : _tokens[^1].Type;
            if (last is null or TokenType.CloseStatement or TokenType.CloseExpression or TokenType.Comment)
            {
                int start = _pos;
                while (_pos < _src.Length && !(_src[_pos] == '{' && _pos + 1 < _src.Length && _src[_pos + 1] is '%' or '{' or '#'))
                    _pos++;
                if (_pos > start)
                {
                    Add(TokenType.Text, _src[start.._pos], start);
                    continue;
                }
            }

            if (At("{#"))
            {
                ReadComment();
                continue;
            }
            if (At("{%-") || At("{{-"))
            {
                StripTrailingWhitespace();
                Add(_src[_pos + 1] == '%' ? TokenType.OpenStatement : TokenType.OpenExpression, _src.Substring(_pos, 2), _pos);
                if (_src[_pos + 1] == '{') _braceDepth = 0;
                _pos += 3;
                continue;
            }

            while (_pos < _src.Length && Js.IsSpace(_src[_pos])) _pos++;
            if (_pos >= _src.Length) throw Error("unexpected end of template inside a tag", _pos);
            if (At("-%}") || At("-}}"))
            {
                Add(_src[_pos + 1] == '%' ? TokenType.CloseStatement : TokenType.CloseExpression, _src.Substring(_pos + 1, 2), _pos);
                _pos += 3;
                while (_pos < _src.Length && Js.IsSpace(_src[_pos])) _pos++;
                continue;
            }

            char c = _src[_pos];
            if (c is '-' or '+' && SignStartsOperand())
            {
                int start = _pos++;
                string number = ReadWhile(Js.IsDigit);
                if (number.Length > 0 && _pos + 1 < _src.Length && _src[_pos] == '.' && Js.IsDigit(_src[_pos + 1]))
                {
                    _pos++;
                    number += "." + ReadWhile(Js.IsDigit);
                }
                Add(number.Length > 0 ? TokenType.Number : TokenType.Unary, c + number, start);
                continue;
            }
            if (TryReadSymbol()) continue;
            if (c is '\'' or '"')
            {
                int start = _pos++;
                string value = ReadString(c);
                _pos++;
                Add(TokenType.String, value, start);
                continue;
            }
            if (Js.IsDigit(c))
            {
                int start = _pos;
                string number = ReadWhile(Js.IsDigit);
                if (_tokens[^1].Type != TokenType.Dot && _pos + 1 < _src.Length && _src[_pos] == '.' && Js.IsDigit(_src[_pos + 1]))
                {
                    _pos++;
                    number += "." + ReadWhile(Js.IsDigit);
                }
                Add(TokenType.Number, number, start);
                continue;
            }
            if (Js.IsWordChar(c))
            {
                int start = _pos;
                Add(TokenType.Identifier, ReadWhile(Js.IsWordChar), start);
                continue;
            }
            throw Error($"unexpected character '{c}'", _pos);
        }
    }

    // A sign is part of a number (or a unary operator) unless it follows an operand.
    private bool SignStartsOperand() => _tokens[^1].Type is not (TokenType.Identifier or TokenType.Number or TokenType.String
        or TokenType.CloseParen or TokenType.CloseBracket);

    private bool TryReadSymbol()
    {
        foreach (var (text, type) in Symbols)
        {
            // Inside a dict literal of an expression, "}}" closes braces, not the expression.
            if (type == TokenType.CloseExpression && _braceDepth > 0) continue;
            if (!At(text)) continue;
            Add(type, text, _pos);
            _pos += text.Length;
            _braceDepth = type switch { TokenType.OpenExpression => 0, TokenType.OpenBrace => _braceDepth + 1, TokenType.CloseBrace => _braceDepth - 1, _ => _braceDepth };
            return true;
        }
        return false;
    }

    private void ReadComment()
    {
        int start = _pos;
        _pos += 2;
        bool stripBefore = _pos < _src.Length && _src[_pos] == '-';
        if (stripBefore) _pos++;
        int bodyStart = _pos;
        while (!At("#}"))
        {
            if (_pos + 2 >= _src.Length) throw Error("comment not closed with #}", start);
            _pos++;
        }
        string comment = _src[bodyStart.._pos];
        bool stripAfter = comment.EndsWith('-');
        if (stripAfter) comment = comment[..^1];
        if (stripBefore) StripTrailingWhitespace();
        Add(TokenType.Comment, comment, start);
        _pos += 2;
        if (stripAfter)
        {
            while (_pos < _src.Length && Js.IsSpace(_src[_pos])) _pos++;
        }
    }

    private string ReadString(char quote)
    {
        int start = _pos - 1;
        var sb = new StringBuilder();
        while (true)
        {
            if (_pos >= _src.Length) throw Error("string literal not closed", start);
            char c = _src[_pos];
            if (c == quote) return sb.ToString();
            if (c != '\\')
            {
                sb.Append(c);
                _pos++;
                continue;
            }
            if (++_pos >= _src.Length) throw Error("string literal not closed", start);
            char escaped = _src[_pos++];
            if (escaped is 'x' or 'u')
            {
                int length = escaped == 'x' ? 2 : 4;
                string hex = _pos + length <= _src.Length ? _src.Substring(_pos, length) : _src[_pos..];
                if (hex.Length != length || !hex.All(Uri.IsHexDigit)) throw Error($"invalid escape \\{escaped}{hex}", _pos - 2);
                sb.Append((char)Convert.ToInt32(hex, 16));
                _pos += length;
                continue;
            }
            sb.Append(escaped switch
            {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                'b' => '\b',
                'f' => '\f',
                'v' => '\v',
                '\'' or '"' or '\\' => escaped,
                _ => throw Error($"unknown escape \\{escaped}", _pos - 2),
            });
        }
    }

    private string ReadWhile(Func<char, bool> predicate)
    {
        int start = _pos;
        while (_pos < _src.Length && predicate(_src[_pos])) _pos++;
        if (_pos >= _src.Length) throw Error("unexpected end of template inside a tag", _pos);
        return _src[start.._pos];
    }

    private void StripTrailingWhitespace()
    {
        if (_tokens.Count == 0 || _tokens[^1].Type != TokenType.Text) return;
        var last = _tokens[^1];
        string trimmed = Js.TrimEnd(last.Value);
        if (trimmed.Length == 0) _tokens.RemoveAt(_tokens.Count - 1);
        else _tokens[^1] = last with { Value = trimmed };
    }

    private bool At(string text) => string.CompareOrdinal(_src, _pos, text, 0, text.Length) == 0 && _pos + text.Length <= _src.Length;

    // Positions are recorded in the original source's terms.
    private void Add(TokenType type, string value, int position) => _tokens.Add(new Token(type, value, _origin[position]));

    private TemplateSyntaxException Error(string message, int position) => TemplateSyntaxException.At(_source, _origin[Math.Min(position, _src.Length)], message);

    // lstrip_blocks: "^[ \t]*({[#%-])" (JavaScript's multiline ^ follows any line terminator).
    [GeneratedRegex(@"(?<=^|[\n\r\u2028\u2029])[ \t]+(?=\{[#%-])")]
    private static partial Regex LeadingBlanksBeforeBlock();

    // trim_blocks: "([#%-]})\n".
    [GeneratedRegex(@"(?<=[#%-]\})\n")]
    private static partial Regex NewlineAfterBlock();

    [GeneratedRegex(@"([" + Js.SpaceClass + @"]*)\{%(-?)[" + Js.SpaceClass + @"]*(?:end)?generation[" + Js.SpaceClass + @"]*(-?)%\}([" + Js.SpaceClass + @"]*)")]
    private static partial Regex GenerationTag();

    /// <summary>Text with the original offset of each character (and of its end).</summary>
    private sealed record SourceText(string Text, int[] Origin)
    {
        /// <summary>Only the given spans, in order.</summary>
        public SourceText Keep(IEnumerable<(int Start, int Length)> spans)
        {
            var text = new StringBuilder();
            var origin = new List<int>();
            foreach (var (start, length) in spans)
            {
                text.Append(Text, start, length);
                origin.AddRange(Origin.AsSpan(start, length));
            }
            origin.Add(Origin[^1]);
            return new SourceText(text.ToString(), [.. origin]);
        }

        /// <summary>Each match of <paramref name="regex"/> replaced by the spans of it that <paramref name="kept"/> names.</summary>
        public SourceText Remove(Regex regex, Func<Match, IEnumerable<(int Start, int Length)>> kept)
        {
            var spans = new List<(int, int)>();
            int at = 0;
            foreach (Match m in regex.Matches(Text))
            {
                spans.Add((at, m.Index - at));
                spans.AddRange(kept(m));
                at = m.Index + m.Length;
            }
            spans.Add((at, Text.Length - at));
            return Keep(spans);
        }
    }
}
