namespace eMoE.Model.Jinja;

/// <summary>
/// Builds the tree of a token list: @huggingface/jinja's grammar (Jinja2's, with Python-like
/// precedence: <c>if-else</c> &lt; <c>or</c> &lt; <c>and</c> &lt; <c>not</c> &lt; comparisons and
/// <c>in</c> &lt; <c>+ - ~</c> &lt; <c>* / // %</c> &lt; <c>**</c> &lt; <c>is</c> &lt; <c>|</c> &lt; unary
/// signs &lt; calls, attributes and subscripts).
/// </summary>
internal sealed class Parser
{
    private readonly string _source;
    private readonly List<Token> _tokens;
    private int _current;

    private Parser(string source, List<Token> tokens)
    {
        _source = source;
        _tokens = tokens;
    }

    public static List<Node> Parse(string source)
    {
        var parser = new Parser(source, Lexer.Tokenize(source));
        var body = new List<Node>();
        while (parser.Peek.Type != TokenType.End) body.Add(parser.ParseAny());
        return body;
    }

    private Token Peek => _tokens[Math.Min(_current, _tokens.Count - 1)];

    private Token Next() => _tokens[Math.Min(_current++, _tokens.Count - 1)];

    private bool Is(params TokenType[] types)
    {
        for (int i = 0; i < types.Length; i++)
        {
            if (_current + i >= _tokens.Count || _tokens[_current + i].Type != types[i]) return false;
        }
        return true;
    }

    private bool IsIdentifier(params string[] names)
    {
        for (int i = 0; i < names.Length; i++)
        {
            if (_current + i >= _tokens.Count) return false;
            var t = _tokens[_current + i];
            if (t.Type != TokenType.Identifier || t.Value != names[i]) return false;
        }
        return true;
    }

    private bool IsStatement(params string[] names) =>
        Is(TokenType.OpenStatement, TokenType.Identifier) && names.Contains(_tokens[_current + 1].Value);

    private Token Expect(TokenType type, string what)
    {
        var token = Peek;
        if (token.Type != type) throw Error(token, $"expected {what}, got {Describe(token)}");
        _current++;
        return token;
    }

    private void ExpectIdentifier(string name)
    {
        if (!IsIdentifier(name)) throw Error(Peek, $"expected '{name}', got {Describe(Peek)}");
        _current++;
    }

    private void ExpectEnd(string name)
    {
        Expect(TokenType.OpenStatement, $"{{% {name} %}}");
        ExpectIdentifier(name);
        Expect(TokenType.CloseStatement, "%}");
    }

    /// <summary>Nodes up to (not including) one of the statements <paramref name="ends"/>.</summary>
    private List<Node> ParseBlock(Token opener, params string[] ends)
    {
        var body = new List<Node>();
        while (!IsStatement(ends))
        {
            if (Peek.Type == TokenType.End)
                throw Error(Peek, $"unexpected end of template: the block opened at {Where(opener)} needs {{% {ends[^1]} %}}");
            body.Add(ParseAny());
        }
        return body;
    }

    private Node ParseAny()
    {
        var token = Peek;
        switch (token.Type)
        {
            case TokenType.Comment:
                _current++;
                return new CommentNode(token.Position);
            case TokenType.Text:
                _current++;
                return new TextNode(token.Value, token.Position);
            case TokenType.OpenStatement:
                return ParseStatement();
            case TokenType.OpenExpression:
                _current++;
                var expression = ParseExpression();
                Expect(TokenType.CloseExpression, "}}");
                return expression;
            default:
                throw Error(token, $"unexpected {Describe(token)}");
        }
    }

    private Node ParseStatement()
    {
        var open = Expect(TokenType.OpenStatement, "{%");
        var keyword = Peek;
        if (keyword.Type != TokenType.Identifier) throw Error(keyword, $"expected a statement name, got {Describe(keyword)}");
        _current++;
        switch (keyword.Value)
        {
            case "set":
                return ParseSet(open);
            case "if":
                {
                    var node = ParseIf(open);
                    ExpectEnd("endif");
                    return node;
                }
            case "for":
                {
                    var node = ParseFor(open);
                    ExpectEnd("endfor");
                    return node;
                }
            case "macro":
                {
                    var name = ParsePrimary();
                    if (name is not NameExpr macroName) throw Error(open, "expected a name after 'macro'");
                    var parameters = ParseArguments(parameters: true);
                    Expect(TokenType.CloseStatement, "%}");
                    var body = ParseBlock(open, "endmacro");
                    ExpectEnd("endmacro");
                    return new MacroNode(macroName.Name, parameters, body, open.Position);
                }
            case "call":
                {
                    var callerParameters = Is(TokenType.OpenParen) ? ParseArguments(parameters: true) : [];
                    var callee = ParsePrimary();
                    if (callee is not NameExpr) throw Error(open, "expected a macro name after 'call'");
                    var arguments = ParseArguments(parameters: false);
                    Expect(TokenType.CloseStatement, "%}");
                    var body = ParseBlock(open, "endcall");
                    ExpectEnd("endcall");
                    return new CallBlockNode(new CallExpr(callee, arguments, callee.Position), callerParameters, body, open.Position);
                }
            case "filter":
                {
                    Expr filter = ParsePrimary();
                    if (filter is NameExpr && Is(TokenType.OpenParen)) filter = ParseCall(filter);
                    Expect(TokenType.CloseStatement, "%}");
                    var body = ParseBlock(open, "endfilter");
                    ExpectEnd("endfilter");
                    return new FilterBlockNode(filter, body, open.Position);
                }
            case "break":
                Expect(TokenType.CloseStatement, "%}");
                return new BreakNode(open.Position);
            case "continue":
                Expect(TokenType.CloseStatement, "%}");
                return new ContinueNode(open.Position);
            default:
                throw Error(keyword, $"unknown statement '{keyword.Value}'");
        }
    }

    private SetNode ParseSet(Token open)
    {
        var target = ParseExpressionSequence(primary: false);
        if (Is(TokenType.Equals))
        {
            _current++;
            var value = ParseExpressionSequence(primary: false);
            Expect(TokenType.CloseStatement, "%}");
            return new SetNode(target, value, [], open.Position);
        }
        Expect(TokenType.CloseStatement, "'=' or %}");
        var body = ParseBlock(open, "endset");
        ExpectEnd("endset");
        return new SetNode(target, null, body, open.Position);
    }

    private IfNode ParseIf(Token open)
    {
        var test = ParseExpression();
        Expect(TokenType.CloseStatement, "%}");
        var body = ParseBlock(open, "elif", "else", "endif");
        var alternate = new List<Node>();
        if (IsStatement("elif"))
        {
            var elif = Next();
            _current++;
            alternate.Add(ParseIf(elif));
        }
        else if (IsStatement("else"))
        {
            _current += 2;
            Expect(TokenType.CloseStatement, "%}");
            alternate = ParseBlock(open, "endif");
        }
        return new IfNode(test, body, alternate, open.Position);
    }

    private ForNode ParseFor(Token open)
    {
        var target = ParseExpressionSequence(primary: true);
        if (target is not (NameExpr or ListExpr { IsTuple: true }))
            throw Error(open, "expected a name or names after 'for'");
        if (!IsIdentifier("in")) throw Error(Peek, $"expected 'in', got {Describe(Peek)}");
        _current++;
        var iterable = ParseExpression();
        Expect(TokenType.CloseStatement, "%}");
        var body = ParseBlock(open, "else", "endfor");
        var alternate = new List<Node>();
        if (IsStatement("else"))
        {
            _current += 2;
            Expect(TokenType.CloseStatement, "%}");
            alternate = ParseBlock(open, "endfor");
        }
        return new ForNode(target, iterable, body, alternate, open.Position);
    }

    private Expr ParseExpressionSequence(bool primary)
    {
        var first = primary ? ParsePrimary() : ParseExpression();
        if (!Is(TokenType.Comma)) return first;
        var items = new List<Expr> { first };
        while (Is(TokenType.Comma))
        {
            _current++;
            items.Add(primary ? ParsePrimary() : ParseExpression());
        }
        return new ListExpr(items, IsTuple: true, first.Position);
    }

    private Expr ParseExpression()
    {
        var value = ParseOr();
        if (!IsIdentifier("if")) return value;
        _current++;
        var condition = ParseOr();
        if (!IsIdentifier("else")) return new SelectExpr(value, condition, value.Position);
        _current++;
        var otherwise = ParseExpression();
        return new TernaryExpr(condition, value, otherwise, value.Position);
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (IsIdentifier("or"))
        {
            _current++;
            left = new BinaryExpr("or", left, ParseAnd(), left.Position);
        }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (IsIdentifier("and"))
        {
            _current++;
            left = new BinaryExpr("and", left, ParseNot(), left.Position);
        }
        return left;
    }

    private Expr ParseNot()
    {
        if (!IsIdentifier("not")) return ParseComparison();
        var not = Next();
        return new UnaryExpr("not", ParseNot(), not.Position);
    }

    private Expr ParseComparison()
    {
        var left = ParseAdditive();
        while (true)
        {
            string op;
            if (IsIdentifier("not", "in"))
            {
                op = "not in";
                _current += 2;
            }
            else if (IsIdentifier("in") || Is(TokenType.Comparison))
            {
                op = Next().Value;
            }
            else
            {
                return left;
            }
            left = new BinaryExpr(op, left, ParseAdditive(), left.Position);
        }
    }

    private Expr ParseAdditive()
    {
        var left = ParseMultiplicative();
        while (Is(TokenType.Additive)) left = new BinaryExpr(Next().Value, left, ParseMultiplicative(), left.Position);
        return left;
    }

    private Expr ParseMultiplicative()
    {
        var left = ParsePower();
        while (Is(TokenType.Multiplicative)) left = new BinaryExpr(Next().Value, left, ParsePower(), left.Position);
        return left;
    }

    private Expr ParsePower()
    {
        var left = ParseTest();
        while (Is(TokenType.Power)) left = new BinaryExpr(Next().Value, left, ParseTest(), left.Position);
        return left;
    }

    private Expr ParseTest()
    {
        var operand = ParseFilter();
        while (IsIdentifier("is"))
        {
            _current++;
            bool negate = IsIdentifier("not");
            if (negate) _current++;
            var test = ParsePrimary();
            if (test is not NameExpr name) throw Error(test, "expected a test name after 'is'");
            operand = new TestExpr(operand, negate, name.Name, operand.Position);
        }
        return operand;
    }

    private Expr ParseFilter()
    {
        var operand = ParseUnarySign();
        while (Is(TokenType.Pipe))
        {
            _current++;
            Expr filter = ParsePrimary();
            if (filter is not NameExpr) throw Error(filter, "expected a filter name after '|'");
            if (Is(TokenType.OpenParen)) filter = ParseCall(filter);
            operand = new FilterExpr(operand, filter, operand.Position);
        }
        return operand;
    }

    private Expr ParseUnarySign()
    {
        var token = Peek;
        if (token.Type is TokenType.Unary or TokenType.Additive && token.Value is "-" or "+")
        {
            _current++;
            return new UnaryExpr(token.Value, ParseUnarySign(), token.Position);
        }
        var member = ParseMember(ParsePrimary());
        return Is(TokenType.OpenParen) ? ParseCall(member) : member;
    }

    private Expr ParseCall(Expr callee)
    {
        Expr call = new CallExpr(callee, ParseArguments(parameters: false), callee.Position);
        call = ParseMember(call);
        return Is(TokenType.OpenParen) ? ParseCall(call) : call;
    }

    /// <summary><c>(a, b=1, *rest, **named)</c> of a call, or the parameters of a macro.</summary>
    private List<Expr> ParseArguments(bool parameters)
    {
        var open = Expect(TokenType.OpenParen, "(");
        var arguments = new List<Expr>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        bool sawKeyword = false, sawSpread = false;
        while (!Is(TokenType.CloseParen))
        {
            if (Peek.Type == TokenType.End) throw Error(open, "unclosed '('");
            bool keywordSpread = Is(TokenType.Power);
            bool spread = Is(TokenType.Multiplicative) && Peek.Value == "*";
            if (parameters && (keywordSpread || spread)) throw Error(Peek, "argument unpacking is not allowed in parameters");
            if (keywordSpread)
            {
                var star = Next();
                arguments.Add(new KeywordSpreadExpr(ParseExpression(), star.Position));
                if (Is(TokenType.Comma)) _current++;
                if (!Is(TokenType.CloseParen)) throw Error(Peek, "'**' must be the last argument");
                break;
            }
            Expr argument;
            if (spread)
            {
                if (sawSpread) throw Error(Peek, "only one '*' argument is allowed");
                sawSpread = true;
                var star = Next();
                argument = new SpreadExpr(ParseExpression(), star.Position);
            }
            else
            {
                argument = ParseExpression();
                if (Is(TokenType.Equals))
                {
                    _current++;
                    if (argument is not NameExpr key) throw Error(argument, parameters ? "expected a parameter name" : "expected a keyword argument name");
                    argument = new KeywordArgumentExpr(key.Name, ParseExpression(), key.Position);
                }
                if (parameters)
                {
                    string name = argument switch
                    {
                        NameExpr n => n.Name,
                        KeywordArgumentExpr k => k.Name,
                        _ => throw Error(argument, "expected a parameter name"),
                    };
                    if (!names.Add(name)) throw Error(argument, $"duplicate parameter '{name}'");
                }
                if (argument is KeywordArgumentExpr) sawKeyword = true;
                else if (sawKeyword) throw Error(argument, parameters ? "a parameter without a default follows one with a default" : "a positional argument follows a keyword argument");
                else if (sawSpread) throw Error(argument, "a positional argument follows '*' unpacking");
            }
            arguments.Add(argument);
            if (Is(TokenType.Comma)) _current++;
        }
        _current++;
        return arguments;
    }

    private Expr ParseMember(Expr obj)
    {
        while (Is(TokenType.Dot) || Is(TokenType.OpenBracket))
        {
            var op = Next();
            if (op.Type == TokenType.OpenBracket)
            {
                var property = ParseSubscript(op);
                Expect(TokenType.CloseBracket, "]");
                obj = new MemberExpr(obj, property, Computed: true, obj.Position);
            }
            else
            {
                var property = ParsePrimary();
                if (property is not (NameExpr or LiteralExpr { Value: NumberValue { IsInteger: true } }))
                    throw Error(property, "expected a name or an integer after '.'");
                obj = new MemberExpr(obj, property, Computed: false, obj.Position);
            }
        }
        return obj;
    }

    /// <summary>An index or a slice <c>[start:stop:step]</c> (each part optional).</summary>
    private Expr ParseSubscript(Token open)
    {
        var parts = new List<Expr?>();
        bool isSlice = false;
        while (!Is(TokenType.CloseBracket))
        {
            if (Peek.Type == TokenType.End) throw Error(open, "unclosed '['");
            if (Is(TokenType.Colon))
            {
                parts.Add(null);
                _current++;
                isSlice = true;
            }
            else
            {
                parts.Add(ParseExpression());
                if (Is(TokenType.Colon))
                {
                    _current++;
                    isSlice = true;
                }
            }
        }
        if (parts.Count == 0) throw Error(open, "expected an index or a slice in '[]'");
        if (!isSlice) return parts[0]!;
        if (parts.Count > 3) throw Error(open, "a slice has at most three parts");
        return new SliceExpr(parts[0], parts.ElementAtOrDefault(1), parts.ElementAtOrDefault(2), open.Position);
    }

    private Expr ParsePrimary()
    {
        var token = Next();
        switch (token.Type)
        {
            case TokenType.Number:
                double number = double.Parse(token.Value, System.Globalization.CultureInfo.InvariantCulture);
                return new LiteralExpr(token.Value.Contains('.') ? Value.Float(number) : Value.Int(number), token.Position);
            case TokenType.String:
                {
                    string text = token.Value;
                    while (Is(TokenType.String)) text += Next().Value;
                    return new LiteralExpr(Value.Str(text), token.Position);
                }
            case TokenType.Identifier:
                return new NameExpr(token.Value, token.Position);
            case TokenType.OpenParen:
                {
                    var inner = ParseExpressionSequence(primary: false);
                    Expect(TokenType.CloseParen, ")");
                    return inner;
                }
            case TokenType.OpenBracket:
                {
                    var items = new List<Expr>();
                    while (!Is(TokenType.CloseBracket))
                    {
                        if (Peek.Type == TokenType.End) throw Error(token, "unclosed '['");
                        items.Add(ParseExpression());
                        if (Is(TokenType.Comma)) _current++;
                    }
                    _current++;
                    return new ListExpr(items, IsTuple: false, token.Position);
                }
            case TokenType.OpenBrace:
                {
                    var entries = new List<(Expr, Expr)>();
                    while (!Is(TokenType.CloseBrace))
                    {
                        if (Peek.Type == TokenType.End) throw Error(token, "unclosed '{'");
                        var key = ParseExpression();
                        Expect(TokenType.Colon, "':' between a key and its value");
                        entries.Add((key, ParseExpression()));
                        if (Is(TokenType.Comma)) _current++;
                    }
                    _current++;
                    return new DictExpr(entries, token.Position);
                }
            default:
                throw Error(token, $"unexpected {Describe(token)}");
        }
    }

    private static string Describe(Token token) => token.Type switch
    {
        TokenType.End => "the end of the template",
        TokenType.Text => "text",
        TokenType.String => $"the string '{token.Value}'",
        TokenType.Identifier => $"'{token.Value}'",
        TokenType.OpenStatement => "'{%'",
        TokenType.CloseStatement => "'%}'",
        TokenType.OpenExpression => "'{{'",
        TokenType.CloseExpression => "'}}'",
        TokenType.Comment => "a comment",
        _ => $"'{token.Value}'",
    };

    private string Where(Token token)
    {
        var (line, column) = ChatTemplateException.LineAndColumn(_source, token.Position);
        return $"line {line}, column {column}";
    }

    private TemplateSyntaxException Error(Token token, string message) => TemplateSyntaxException.At(_source, token.Position, message);

    private TemplateSyntaxException Error(Node node, string message) => TemplateSyntaxException.At(_source, node.Position, message);
}
