using System.Globalization;
using System.Text.RegularExpressions;

namespace eMoE.Compute;

/// <summary>Memory sizes as people write them (<c>512MiB</c>, <c>1.5GB</c>, <c>4096</c>) and as we print them.</summary>
public static partial class ByteSize
{
    /// <summary>
    /// Parses a byte count with an optional decimal (KB, MB, GB, TB) or binary (KiB, MiB, GiB, TiB)
    /// unit; null when the text is not such a size. <paramref name="what"/> names the setting in errors.
    /// </summary>
    /// <exception cref="ArgumentException">A size with an unknown unit or not positive; the message quotes it.</exception>
    public static long? TryParse(string text, string what)
    {
        var m = SizePattern().Match(text.Trim());
        if (!m.Success) return null;
        double value = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        double unit = m.Groups[2].Value.ToUpperInvariant() switch
        {
            "" or "B" => 1,
            "K" or "KB" => 1e3,
            "KIB" => 1L << 10,
            "M" or "MB" => 1e6,
            "MIB" => 1L << 20,
            "G" or "GB" => 1e9,
            "GIB" => 1L << 30,
            "T" or "TB" => 1e12,
            "TIB" => 1L << 40,
            _ => throw new ArgumentException($"{what} '{text}' has an unknown unit '{m.Groups[2].Value}'"),
        };
        long bytes = (long)(value * unit);
        return bytes > 0 ? bytes : throw new ArgumentException($"{what} must be positive, got '{text}'");
    }

    /// <summary>Parses a size as <see cref="TryParse"/> does, or throws naming the setting.</summary>
    /// <exception cref="ArgumentException">The text is not a size.</exception>
    public static long Parse(string text, string what) =>
        TryParse(text, what) ?? throw new ArgumentException($"{what} '{text}' is not a size such as 512MiB or 2GB");

    /// <summary>A short human-readable size: <c>24.0 MiB</c>.</summary>
    public static string Format(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.00} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.0} KiB",
        _ => $"{bytes} B",
    };

    [GeneratedRegex(@"^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$")]
    private static partial Regex SizePattern();
}
