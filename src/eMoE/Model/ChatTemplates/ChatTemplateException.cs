namespace eMoE.Model;

/// <summary>A chat template failed to render: a type error, an unknown filter, an undefined value where one is needed.</summary>
public class ChatTemplateException : Exception
{
    /// <summary>Creates the exception with its message.</summary>
    public ChatTemplateException(string message) : base(message) { }

    /// <summary>Creates the exception at a place in the template source.</summary>
    public ChatTemplateException(string message, int line, int column) : base($"line {line}, column {column}: {message}")
    {
        Line = line;
        Column = column;
    }

    /// <summary>The 1-based line in the template source, when known.</summary>
    public int? Line { get; }

    /// <summary>The 1-based column in the template source (UTF-16 units), when known.</summary>
    public int? Column { get; }

    /// <summary>The line and column of <paramref name="offset"/> in <paramref name="source"/>.</summary>
    internal static (int Line, int Column) LineAndColumn(string source, int offset)
    {
        int line = 1, lineStart = 0;
        for (int i = 0; i < offset && i < source.Length; i++)
        {
            if (source[i] == '\n')
            {
                line++;
                lineStart = i + 1;
            }
        }
        return (line, offset - lineStart + 1);
    }
}

/// <summary>A chat template is not valid Jinja; <see cref="ChatTemplateException.Line"/> and <see cref="ChatTemplateException.Column"/> say where.</summary>
public sealed class TemplateSyntaxException : ChatTemplateException
{
    /// <summary>Creates the exception at a line and column.</summary>
    public TemplateSyntaxException(string message, int line, int column) : base(message, line, column) { }

    internal static TemplateSyntaxException At(string source, int offset, string message)
    {
        var (line, column) = LineAndColumn(source, offset);
        return new TemplateSyntaxException(message, line, column);
    }
}

/// <summary>
/// The template called <c>raise_exception(message)</c>: it refuses the conversation (roles out of
/// order, a role it does not support). <see cref="Exception.Message"/> is the template's message, unchanged.
/// </summary>
public sealed class TemplateRaisedException : ChatTemplateException
{
    /// <summary>Creates the exception with the template's message.</summary>
    public TemplateRaisedException(string message) : base(message) { }
}
