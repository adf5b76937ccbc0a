namespace eMoE.Model;

/// <summary>
/// Raised when a model directory, checkpoint, configuration or tokenizer file is malformed or
/// unsupported. The message names the file and, where there is one, the tensor or field.
/// </summary>
public sealed class ModelFormatException : Exception
{
    /// <summary>Creates the exception with a message that names the offending file and item.</summary>
    public ModelFormatException(string message) : base(message) { }

    /// <summary>Creates the exception with a message and the error that caused it.</summary>
    public ModelFormatException(string message, Exception inner) : base(message, inner) { }
}
