namespace eMoE.Model;

/// <summary>A piece of input: plain text to run through the model, or one added token.</summary>
internal readonly record struct TextSegment(int Start, int Length, int TokenId)
{
    public bool IsToken => TokenId >= 0;
}

/// <summary>
/// Finds added tokens (such as <c>&lt;|endoftext|&gt;</c> or <c>&lt;s&gt;</c>) in text the way HF's
/// AddedVocabulary does: leftmost-longest matches, honouring lstrip / rstrip / single_word; the text
/// between them is tokenized separately.
/// </summary>
internal sealed class AddedTokenSplitter
{
    // Candidates by first character, longest first, so the first hit at a position is the longest.
    private readonly Dictionary<char, AddedTokenDefinition[]> _byFirstChar;

    public AddedTokenSplitter(IEnumerable<AddedTokenDefinition> tokens)
    {
        _byFirstChar = tokens
            .Where(t => t.Content.Length > 0)
            .GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
    }

    public List<TextSegment> Split(string text)
    {
        var segments = new List<TextSegment>();
        int textStart = 0;
        for (int i = 0; i < text.Length; i++)
        {
            if (!_byFirstChar.TryGetValue(text[i], out var candidates))
            {
                continue;
            }

            foreach (var token in candidates)
            {
                if (!text.AsSpan(i).StartsWith(token.Content, StringComparison.Ordinal))
                {
                    continue;
                }

                int end = i + token.Content.Length;
                if (token.SingleWord && !IsWordBoundary(text, i, end))
                {
                    continue;
                }

                int start = i;
                if (token.LeftStrip)
                {
                    while (start > textStart && char.IsWhiteSpace(text[start - 1]))
                    {
                        start--;
                    }
                }

                if (token.RightStrip)
                {
                    while (end < text.Length && char.IsWhiteSpace(text[end]))
                    {
                        end++;
                    }
                }

                if (start > textStart)
                {
                    segments.Add(new TextSegment(textStart, start - textStart, -1));
                }

                segments.Add(new TextSegment(start, end - start, token.Id));
                textStart = end;
                i = end - 1;
                break;
            }
        }

        if (textStart < text.Length)
        {
            segments.Add(new TextSegment(textStart, text.Length - textStart, -1));
        }

        return segments;
    }

    private static bool IsWordBoundary(string text, int start, int end) =>
        (start == 0 || !char.IsLetterOrDigit(text[start - 1])) && (end == text.Length || !char.IsLetterOrDigit(text[end]));
}
