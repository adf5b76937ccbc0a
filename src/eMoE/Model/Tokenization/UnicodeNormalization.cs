using System.Text;

namespace eMoE.Model;

/// <summary>
/// Managed NFC / NFD. string.Normalize needs ICU, and eMoE's hosts run with invariant globalization,
/// where it silently returns its input; Qwen-style tokenizers normalize with NFC, so ids would differ
/// from Hugging Face for non-NFC input. This follows the Unicode reference algorithm (UAX #15).
/// </summary>
internal static partial class UnicodeNormalization
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private static readonly Dictionary<int, (int First, int Second)> s_decompositions = BuildDecompositions();
    private static readonly Dictionary<long, int> s_compositions = BuildCompositions();

    /// <summary>Whether string.Normalize works here (it does not under invariant globalization).</summary>
    public static bool RuntimeCanNormalize { get; } = "e\u0301".Normalize() == "\u00e9";

    /// <summary>Canonical composition (NFC) of <paramref name="text"/>.</summary>
    public static string Nfc(string text) => IsAsciiOrLatin1Composed(text) ? text : Compose(Decompose(text));

    /// <summary>Canonical decomposition (NFD) of <paramref name="text"/>.</summary>
    public static string Nfd(string text) => Ascii.IsValid(text) ? text : ToString(Decompose(text));

    // Latin-1 has no combining marks and no decomposable sequences that NFC would change.
    private static bool IsAsciiOrLatin1Composed(string text)
    {
        foreach (char c in text)
        {
            if (c >= 0x300)
            {
                return false;
            }
        }

        return true;
    }

    private static List<int> Decompose(string text)
    {
        var result = new List<int>(text.Length);
        foreach (var rune in text.EnumerateRunes())
        {
            DecomposeInto(rune.Value, result);
        }

        // Canonical ordering: stable sort of each run of non-starters by combining class.
        for (int i = 1; i < result.Count; i++)
        {
            int cc = CombiningClass(result[i]);
            if (cc == 0)
            {
                continue;
            }

            for (int j = i; j > 0 && CombiningClass(result[j - 1]) > cc; j--)
            {
                (result[j - 1], result[j]) = (result[j], result[j - 1]);
            }
        }

        return result;
    }

    private static void DecomposeInto(int cp, List<int> output)
    {
        int s = cp - SBase;
        if (s is >= 0 and < SCount)
        {
            output.Add(LBase + (s / NCount));
            output.Add(VBase + (s % NCount / TCount));
            if (s % TCount != 0)
            {
                output.Add(TBase + (s % TCount));
            }

            return;
        }

        if (s_decompositions.TryGetValue(cp, out var d))
        {
            DecomposeInto(d.First, output);
            if (d.Second >= 0)
            {
                DecomposeInto(d.Second, output);
            }

            return;
        }

        output.Add(cp);
    }

    private static string Compose(List<int> chars)
    {
        if (chars.Count == 0)
        {
            return "";
        }

        int starterIndex = 0;
        int starter = chars[0];
        int lastClass = CombiningClass(starter) == 0 ? 0 : 256;
        int written = 1;
        for (int i = 1; i < chars.Count; i++)
        {
            int c = chars[i];
            int cc = CombiningClass(c);
            int composite = ComposePair(starter, c);
            if (composite >= 0 && (lastClass < cc || lastClass == 0))
            {
                chars[starterIndex] = composite;
                starter = composite;
                continue;
            }

            if (cc == 0)
            {
                starterIndex = written;
                starter = c;
            }

            lastClass = cc;
            chars[written++] = c;
        }

        chars.RemoveRange(written, chars.Count - written);
        return ToString(chars);
    }

    private static int ComposePair(int first, int second)
    {
        int l = first - LBase, v = second - VBase;
        if (l is >= 0 and < LCount && v is >= 0 and < VCount)
        {
            return SBase + (((l * VCount) + v) * TCount);
        }

        int s = first - SBase, t = second - TBase;
        if (s is >= 0 and < SCount && s % TCount == 0 && t is > 0 and < TCount)
        {
            return first + t;
        }

        return s_compositions.TryGetValue(((long)first << 21) | (uint)second, out int composite) ? composite : -1;
    }

    private static int CombiningClass(int cp)
    {
        var ranges = CombiningClassRanges;
        int lo = 0, hi = (ranges.Length / 3) - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >> 1;
            if (cp < ranges[mid * 3])
            {
                hi = mid - 1;
            }
            else if (cp > ranges[(mid * 3) + 1])
            {
                lo = mid + 1;
            }
            else
            {
                return ranges[(mid * 3) + 2];
            }
        }

        return 0;
    }

    private static string ToString(List<int> chars)
    {
        var builder = new StringBuilder(chars.Count);
        foreach (int cp in chars)
        {
            builder.Append(new Rune(cp).ToString());
        }

        return builder.ToString();
    }

    private static Dictionary<int, (int, int)> BuildDecompositions()
    {
        var table = Decompositions;
        var map = new Dictionary<int, (int, int)>(table.Length / 3);
        for (int i = 0; i < table.Length; i += 3)
        {
            map[Math.Abs(table[i])] = (table[i + 1], table[i + 2]);
        }

        return map;
    }

    private static Dictionary<long, int> BuildCompositions()
    {
        var table = Decompositions;
        var map = new Dictionary<long, int>();
        for (int i = 0; i < table.Length; i += 3)
        {
            if (table[i] > 0 && table[i + 2] >= 0)
            {
                map[((long)table[i + 1] << 21) | (uint)table[i + 2]] = table[i];
            }
        }

        return map;
    }
}
