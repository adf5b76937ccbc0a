using System.Globalization;
using eMoE.Compute;

namespace eMoE.Experts;

/// <summary>
/// How much device memory expert weights may use: bytes (<c>512MiB</c>, <c>1.5GB</c>, <c>4096</c>)
/// or a share of all expert bytes (<c>25%</c>). <see cref="All"/> keeps every expert resident.
/// </summary>
public sealed record ExpertBudget
{
    /// <summary>Bytes, when given as bytes.</summary>
    public long? Bytes { get; }
    /// <summary>Fraction of all expert bytes in (0, 1], when given as a percentage.</summary>
    public double? Fraction { get; }

    private ExpertBudget(long? bytes, double? fraction)
    {
        Bytes = bytes;
        Fraction = fraction;
    }

    /// <summary>Every expert resident.</summary>
    public static ExpertBudget All { get; } = new(null, 1.0);

    /// <summary>A budget of a fixed number of bytes.</summary>
    public static ExpertBudget FromBytes(long bytes) =>
        bytes > 0 ? new(bytes, null) : throw new ArgumentException($"expert memory must be positive, got {bytes} bytes");

    /// <summary>A budget of a share of all expert bytes, in (0, 1].</summary>
    public static ExpertBudget FromFraction(double fraction) =>
        fraction > 0 && fraction <= 1 ? new(null, fraction)
            : throw new ArgumentException($"expert memory share must be in (0%, 100%], got {fraction * 100}%");

    /// <summary>Parses <c>512MiB</c>, <c>2GB</c>, <c>1048576</c>, <c>25%</c> or <c>all</c>.</summary>
    /// <exception cref="ArgumentException">The text is not a size; the message quotes it.</exception>
    public static ExpertBudget Parse(string text)
    {
        string t = text.Trim();
        if (t.Equals("all", StringComparison.OrdinalIgnoreCase)) return All;
        if (t.EndsWith('%'))
        {
            if (!double.TryParse(t[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double percent))
                throw new ArgumentException($"expert memory '{text}' is not a percentage");
            return FromFraction(percent / 100);
        }
        long bytes = ByteSize.TryParse(t, "expert memory") ?? throw new ArgumentException($"expert memory '{text}' is not a size such as 512MiB, 2GB or 25%");
        return FromBytes(bytes);
    }

    /// <summary>
    /// Number of expert slots this budget buys: as many whole experts as fit, capped at all experts.
    /// </summary>
    /// <exception cref="ArgumentException">Fewer slots than one layer's top-k needs; the message names the minimum.</exception>
    public int SlotCount(long expertBytes, int totalExperts, int topK)
    {
        long budget = Bytes ?? (long)Math.Floor(Fraction!.Value * expertBytes * totalExperts + 1e-6);
        long slots = Math.Min(totalExperts, budget / expertBytes);
        if (slots < topK)
        {
            throw new ArgumentException(
                $"expert memory {Describe(expertBytes * totalExperts)} holds {slots} experts; one layer's top-{topK} needs at least " +
                $"{topK} experts = {topK * expertBytes:N0} bytes ({100.0 * topK / totalExperts:0.##}% of expert bytes)");
        }
        return (int)slots;
    }

    private string Describe(long totalBytes) => Bytes is long b ? $"{b:N0} bytes" : $"{Fraction * 100:0.##}% of {totalBytes:N0} bytes";
}
