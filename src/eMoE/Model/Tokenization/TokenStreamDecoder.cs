using System.Text;

namespace eMoE.Model;

/// <summary>
/// Decodes generated ids one at a time. Text is returned as soon as no later id can change it: an
/// incomplete UTF-8 sequence (byte-level tokens or <c>&lt;0xNN&gt;</c> byte-fallback tokens) is held
/// back, and the SentencePiece leading-space strip is applied once, at the start. Concatenating every
/// <see cref="Append"/> result and <see cref="Flush"/> gives exactly <see cref="MoeTokenizer.Decode"/>
/// of the same ids. Not thread-safe: use one instance per generated sequence.
/// </summary>
public sealed class TokenStreamDecoder
{
    private readonly MoeTokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly StringBuilder _buffer = new();
    private DecodeState _state;

    internal TokenStreamDecoder(MoeTokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
        _state = tokenizer.CreateDecodeState();
    }

    /// <summary>Feeds the next id; returns the newly completed text, or "" when nothing is complete yet.</summary>
    public string Append(int id)
    {
        if (_tokenizer.TokenForDecode(id, _skipSpecialTokens) is not { } token)
        {
            return "";
        }

        _state.Append(token, _buffer);
        return Take();
    }

    /// <summary>
    /// Ends the sequence and returns whatever was held back (incomplete bytes become U+FFFD, as Hugging
    /// Face does). The decoder can then be reused for a new sequence.
    /// </summary>
    public string Flush()
    {
        _state.Flush(_buffer);
        _state = _tokenizer.CreateDecodeState();
        return Take();
    }

    private string Take()
    {
        string text = _buffer.ToString();
        _buffer.Clear();
        return text;
    }
}
