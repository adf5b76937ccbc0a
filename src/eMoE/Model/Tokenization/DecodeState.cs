using System.Text;

namespace eMoE.Model;

/// <summary>
/// The running state of one decode: tokens go in one at a time and only text that no later token can
/// change comes out. A full decode is the same state fed every token and then flushed, which is what
/// makes streamed output equal <see cref="MoeTokenizer.Decode"/> by construction.
/// </summary>
internal abstract class DecodeState
{
    /// <summary>Feeds the next token's string; appends whatever text became final.</summary>
    public abstract void Append(string token, StringBuilder output);

    /// <summary>Ends the sequence; appends what was held back (incomplete bytes become U+FFFD).</summary>
    public abstract void Flush(StringBuilder output);
}

/// <summary>
/// HF's ByteLevel decoder: every token's characters map back to bytes (a token with a character outside
/// the alphabet, such as an added token, contributes its own UTF-8), and the byte stream is read as
/// lossy UTF-8. A stateful .NET UTF-8 decoder holds back an incomplete tail and replaces maximal invalid
/// subsequences with one U+FFFD each, exactly like Rust's from_utf8_lossy over the whole stream.
/// </summary>
internal sealed class ByteLevelDecodeState : DecodeState
{
    private readonly Decoder _utf8 = new UTF8Encoding(false, false).GetDecoder();

    public override void Append(string token, StringBuilder output)
    {
        byte[] bytes = new byte[token.Length];
        bool mapped = true;
        for (int i = 0; i < token.Length && mapped; i++)
        {
            mapped = ByteLevelAlphabet.TryGetByte(token[i], out bytes[i]);
        }

        Decode(mapped ? bytes : Encoding.UTF8.GetBytes(token), flush: false, output);
    }

    public override void Flush(StringBuilder output) => Decode([], flush: true, output);

    private void Decode(ReadOnlySpan<byte> bytes, bool flush, StringBuilder output)
    {
        int count = _utf8.GetCharCount(bytes, flush);
        Span<char> chars = count <= 256 ? stackalloc char[256] : new char[count];
        int written = _utf8.GetChars(bytes, chars, flush);
        output.Append(chars[..written]);
    }
}

/// <summary>
/// HF's SentencePiece-style decoder chain: per-token Replace / Metaspace rewrites, then ByteFallback
/// (a run of <c>&lt;0xNN&gt;</c> tokens becomes its UTF-8 text, or one U+FFFD per byte when the run is
/// not valid UTF-8), then Fuse, then Strip of leading characters of the whole text. A byte run is held
/// until a non-byte token or the end closes it, because validity is judged on the run as a whole.
/// </summary>
internal sealed class SentencePieceDecodeState(IReadOnlyList<DecoderStep> steps) : DecodeState
{
    private static readonly UTF8Encoding s_strictUtf8 = new(false, true);
    private readonly bool _byteFallback = steps.Any(s => s is ByteFallbackDecoderStep);
    private readonly List<byte> _pendingBytes = [];
    private int _stripLeft = steps.OfType<StripDecoderStep>().Sum(s => s.Start);
    private readonly char _stripChar = steps.OfType<StripDecoderStep>().Select(s => s.Content).FirstOrDefault();
    private int _tokenIndex;

    public override void Append(string token, StringBuilder output)
    {
        foreach (var step in steps)
        {
            token = step switch
            {
                ReplaceDecoderStep r => token.Replace(r.Pattern, r.Content, StringComparison.Ordinal),
                // HF drops every replacement character of the first token, not only a leading one.
                MetaspaceDecoderStep m => token.Replace(m.Replacement.ToString(), _tokenIndex == 0 && m.StripFirst ? "" : " ", StringComparison.Ordinal),
                _ => token,
            };
        }

        _tokenIndex++;
        if (_byteFallback && TryParseByte(token, out byte b))
        {
            _pendingBytes.Add(b);
            return;
        }

        FlushBytes(output);
        Emit(token, output);
    }

    public override void Flush(StringBuilder output) => FlushBytes(output);

    private void FlushBytes(StringBuilder output)
    {
        if (_pendingBytes.Count == 0)
        {
            return;
        }

        string text;
        try
        {
            text = s_strictUtf8.GetString([.. _pendingBytes]);
        }
        catch (DecoderFallbackException)
        {
            text = new string('\uFFFD', _pendingBytes.Count);
        }

        _pendingBytes.Clear();
        Emit(text, output);
    }

    private void Emit(string text, StringBuilder output)
    {
        int skip = 0;
        while (_stripLeft > 0 && skip < text.Length)
        {
            if (text[skip] != _stripChar)
            {
                _stripLeft = 0;
                break;
            }

            skip++;
            _stripLeft--;
        }

        output.Append(text, skip, text.Length - skip);
    }

    // HF's test: exactly six characters "<0x" + two hex digits + ">".
    private static bool TryParseByte(string token, out byte value)
    {
        value = 0;
        return token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out value);
    }
}
