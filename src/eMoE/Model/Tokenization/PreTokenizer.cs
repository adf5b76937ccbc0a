using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace eMoE.Model;

/// <summary>
/// Runs tokenizer.json's pre-tokenizer steps on one normalized segment, producing the words the BPE
/// model sees. Mirrors HF: every step re-splits the pieces of the previous one.
/// </summary>
internal sealed class PreTokenizer(IReadOnlyList<PreTokenizerStep> steps)
{
    // GPT-2's pattern, used by ByteLevel when use_regex is true.
    private static readonly Regex s_gpt2 = new(
        @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        RegexOptions.CultureInvariant | RegexOptions.Compiled);

    /// <param name="segment">The normalized text between added tokens.</param>
    /// <param name="atTextStart">Whether the segment starts the input (Metaspace's "first" scheme).</param>
    public List<string> Split(string segment, bool atTextStart)
    {
        // Like HF, nothing (not even a Metaspace prefix) comes out of an empty segment.
        var pieces = segment.Length == 0 ? [] : new List<string> { segment };
        foreach (var step in steps)
        {
            var next = new List<string>(pieces.Count);
            for (int i = 0; i < pieces.Count; i++)
            {
                string piece = pieces[i];
                switch (step)
                {
                    case SplitStep split:
                        SplitByRegex(piece, split.Pattern, split.RemoveMatches, next);
                        break;
                    case ByteLevelStep byteLevel:
                        ByteLevel(piece, byteLevel, next);
                        break;
                    case MetaspaceStep metaspace:
                        Metaspace(piece, metaspace, atTextStart && i == 0, next);
                        break;
                    default:
                        throw new InvalidOperationException($"unknown pre-tokenizer step {step}");
                }
            }

            pieces = next;
        }

        return pieces;
    }

    // HF's Split with behavior Isolated keeps matches and the gaps between them as separate pieces.
    private static void SplitByRegex(string piece, Regex pattern, bool removeMatches, List<string> output)
    {
        // .NET regexes see UTF-16 code units, Oniguruma sees code points: match on a shadow string
        // where each supplementary-plane character is one BMP stand-in of the same category.
        int[]? map = null;
        string subject = piece;
        if (piece.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') >= 0)
        {
            (subject, map) = Shadow(piece);
        }

        int last = 0;
        foreach (var m in pattern.EnumerateMatches(subject))
        {
            if (m.Length == 0)
            {
                continue;
            }

            int start = map is null ? m.Index : map[m.Index];
            int end = map is null ? m.Index + m.Length : map[m.Index + m.Length];
            if (start > last)
            {
                output.Add(piece[last..start]);
            }

            if (!removeMatches)
            {
                output.Add(piece[start..end]);
            }

            last = end;
        }

        if (last < piece.Length)
        {
            output.Add(piece[last..]);
        }
    }

    private static (string Shadow, int[] Map) Shadow(string piece)
    {
        var shadow = new StringBuilder(piece.Length);
        var map = new List<int>(piece.Length + 1);
        for (int i = 0; i < piece.Length;)
        {
            map.Add(i);
            if (Rune.DecodeFromUtf16(piece.AsSpan(i), out var rune, out int used) == System.Buffers.OperationStatus.Done && used == 2)
            {
                shadow.Append(StandIn(Rune.GetUnicodeCategory(rune)));
            }
            else
            {
                shadow.Append(piece[i]);
                used = 1;
            }

            i += used;
        }

        map.Add(piece.Length);
        return (shadow.ToString(), map.ToArray());
    }

    // Non-ASCII representatives, so that literal characters of a pattern are unlikely to match them.
    private static char StandIn(UnicodeCategory category) => category switch
    {
        UnicodeCategory.UppercaseLetter => '\u00C0',
        UnicodeCategory.LowercaseLetter => '\u00DF',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u4E00',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '\u00AB',
        UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '\u00A1',
        UnicodeCategory.MathSymbol => '\u00AC',
        UnicodeCategory.CurrencySymbol => '\u00A2',
        UnicodeCategory.ModifierSymbol => '\u00B4',
        UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000',
        UnicodeCategory.OtherNotAssigned => '\u0378',
        _ => '\u00A9', // OtherSymbol: emoji and the like
    };

    private static void ByteLevel(string piece, ByteLevelStep step, List<string> output)
    {
        if (step.AddPrefixSpace && !piece.StartsWith(' '))
        {
            piece = " " + piece;
        }

        if (!step.UseRegex)
        {
            output.Add(ByteLevelAlphabet.Map(piece));
            return;
        }

        var parts = new List<string>();
        SplitByRegex(piece, s_gpt2, removeMatches: false, parts);
        foreach (string part in parts)
        {
            output.Add(ByteLevelAlphabet.Map(part));
        }
    }

    private static void Metaspace(string piece, MetaspaceStep step, bool first, List<string> output)
    {
        string replaced = piece.Replace(' ', step.Replacement);
        bool prepend = step.Prepend == MetaspacePrepend.Always || (step.Prepend == MetaspacePrepend.First && first);
        if (prepend && !replaced.StartsWith(step.Replacement))
        {
            replaced = step.Replacement + replaced;
        }

        if (!step.Split)
        {
            output.Add(replaced);
            return;
        }

        // Split with MergedWithNext: each replacement character starts a new piece.
        int start = 0;
        for (int i = 1; i < replaced.Length; i++)
        {
            if (replaced[i] == step.Replacement)
            {
                output.Add(replaced[start..i]);
                start = i;
            }
        }

        if (start < replaced.Length)
        {
            output.Add(replaced[start..]);
        }
    }
}
