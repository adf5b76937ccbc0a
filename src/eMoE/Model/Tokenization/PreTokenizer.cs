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
        var pieces = new List<string> { segment };
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
        int last = 0;
        foreach (var m in pattern.EnumerateMatches(piece))
        {
            if (m.Length == 0)
            {
                continue;
            }

            if (m.Index > last)
            {
                output.Add(piece[last..m.Index]);
            }

            if (!removeMatches)
            {
                output.Add(piece.Substring(m.Index, m.Length));
            }

            last = m.Index + m.Length;
        }

        if (last < piece.Length)
        {
            output.Add(piece[last..]);
        }
    }

    private static void ByteLevel(string piece, ByteLevelStep step, List<string> output)
    {
        if (step.AddPrefixSpace && !piece.StartsWith(' '))
        {
            piece = " " + piece;
        }

        if (!step.UseRegex)
        {
            output.Add(ByteLevelAlphabet.Map(Encoding.UTF8.GetBytes(piece)));
            return;
        }

        var parts = new List<string>();
        SplitByRegex(piece, s_gpt2, removeMatches: false, parts);
        foreach (string part in parts)
        {
            output.Add(ByteLevelAlphabet.Map(Encoding.UTF8.GetBytes(part)));
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
