namespace eMoE.Model.Jinja;

/// <summary>A node of the template: a statement, or an expression whose value is printed.</summary>
internal abstract record Node(int Position);

internal sealed record TextNode(string Text, int Position) : Node(Position);

internal sealed record CommentNode(int Position) : Node(Position);

internal sealed record IfNode(Expr Test, List<Node> Body, List<Node> Else, int Position) : Node(Position);

/// <summary><c>{% for target in iterable %}</c>; the iterable may be a <see cref="SelectExpr"/> (<c>for x in xs if c</c>).</summary>
internal sealed record ForNode(Expr Target, Expr Iterable, List<Node> Body, List<Node> Else, int Position) : Node(Position);

/// <summary><c>{% set target = value %}</c>, or with a body: <c>{% set target %}...{% endset %}</c>.</summary>
internal sealed record SetNode(Expr Target, Expr? Value, List<Node> Body, int Position) : Node(Position);

internal sealed record MacroNode(string Name, List<Expr> Parameters, List<Node> Body, int Position) : Node(Position);

internal sealed record CallBlockNode(CallExpr Call, List<Expr> CallerParameters, List<Node> Body, int Position) : Node(Position);

internal sealed record FilterBlockNode(Expr Filter, List<Node> Body, int Position) : Node(Position);

internal sealed record BreakNode(int Position) : Node(Position);

internal sealed record ContinueNode(int Position) : Node(Position);

internal abstract record Expr(int Position) : Node(Position);

internal sealed record LiteralExpr(Value Value, int Position) : Expr(Position);

internal sealed record ListExpr(List<Expr> Items, bool IsTuple, int Position) : Expr(Position);

internal sealed record DictExpr(List<(Expr Key, Expr Value)> Entries, int Position) : Expr(Position);

internal sealed record NameExpr(string Name, int Position) : Expr(Position);

/// <summary><c>object.name</c>, <c>object.0</c> or <c>object[property]</c> (<paramref name="Computed"/>).</summary>
internal sealed record MemberExpr(Expr Object, Expr Property, bool Computed, int Position) : Expr(Position);

internal sealed record SliceExpr(Expr? Start, Expr? Stop, Expr? Step, int Position) : Expr(Position);

internal sealed record CallExpr(Expr Callee, List<Expr> Arguments, int Position) : Expr(Position);

internal sealed record KeywordArgumentExpr(string Name, Expr Value, int Position) : Expr(Position);

/// <summary><c>*args</c> in a call.</summary>
internal sealed record SpreadExpr(Expr Value, int Position) : Expr(Position);

/// <summary><c>**kwargs</c> in a call.</summary>
internal sealed record KeywordSpreadExpr(Expr Value, int Position) : Expr(Position);

internal sealed record BinaryExpr(string Operator, Expr Left, Expr Right, int Position) : Expr(Position);

internal sealed record UnaryExpr(string Operator, Expr Operand, int Position) : Expr(Position);

/// <summary><c>operand | filter</c>; the filter is a <see cref="NameExpr"/> or a <see cref="CallExpr"/> of one.</summary>
internal sealed record FilterExpr(Expr Operand, Expr Filter, int Position) : Expr(Position);

internal sealed record TestExpr(Expr Operand, bool Negate, string Test, int Position) : Expr(Position);

/// <summary><c>value if condition</c> without an else: undefined when the condition is false.</summary>
internal sealed record SelectExpr(Expr Value, Expr Condition, int Position) : Expr(Position);

internal sealed record TernaryExpr(Expr Condition, Expr Then, Expr Else, int Position) : Expr(Position);
