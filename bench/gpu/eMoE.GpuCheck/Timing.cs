using System.Diagnostics;

namespace eMoE.GpuCheck;

/// <summary>How long to time each kernel.</summary>
/// <param name="Warmup">Launches before timing (JIT, first-touch, clocks).</param>
/// <param name="Samples">Timed samples; the median is reported.</param>
/// <param name="MinSampleSeconds">Each sample runs enough back-to-back launches to last at least this long.</param>
/// <param name="MaxCallsPerSample">Upper bound on the launches of one sample.</param>
internal sealed record TimingOptions(int Warmup, int Samples, double MinSampleSeconds, int MaxCallsPerSample)
{
    /// <summary>On a GPU: about 0.3 s per kernel.</summary>
    public static TimingOptions Gpu { get; } = new(Warmup: 5, Samples: 15, MinSampleSeconds: 0.01, MaxCallsPerSample: 20_000);

    /// <summary>On the CPU accelerator (dry run): short.</summary>
    public static TimingOptions Small { get; } = new(Warmup: 2, Samples: 5, MinSampleSeconds: 0.005, MaxCallsPerSample: 1_000);
}

/// <summary>A kernel's time per call.</summary>
/// <param name="Median">Median over the samples of (sample time / launches in the sample), seconds: back-to-back launches, one wait at the end.</param>
/// <param name="Min">Fastest sample, per call.</param>
/// <param name="Max">Slowest sample, per call.</param>
/// <param name="Samples">Timed samples.</param>
/// <param name="CallsPerSample">Launches per sample.</param>
/// <param name="SyncedMedian">Median of single calls each waited for (launch + synchronize), seconds: what BenchmarkDotNet's benchmarks measure.</param>
internal readonly record struct Timing(double Median, double Min, double Max, int Samples, int CallsPerSample, double SyncedMedian);

/// <summary>A Stopwatch harness: warm-up, then samples of back-to-back launches, medians.</summary>
internal static class TimingHarness
{
    public static Timing Measure(Action launch, Action synchronize, TimingOptions options)
    {
        for (int i = 0; i < options.Warmup; i++) launch();
        synchronize();

        // Calls per sample: grow until one sample lasts MinSampleSeconds.
        int calls = 1;
        while (calls < options.MaxCallsPerSample)
        {
            double t = Batch(launch, synchronize, calls);
            if (t >= options.MinSampleSeconds) break;
            double scale = t <= 0 ? 10 : Math.Min(10, options.MinSampleSeconds / t * 1.2);
            calls = (int)Math.Min(options.MaxCallsPerSample, Math.Max(calls + 1, Math.Ceiling(calls * scale)));
        }

        var perCall = new double[options.Samples];
        for (int s = 0; s < perCall.Length; s++) perCall[s] = Batch(launch, synchronize, calls) / calls;

        var synced = new double[Math.Max(options.Samples, 3 * options.Samples)];
        for (int s = 0; s < synced.Length; s++) synced[s] = Batch(launch, synchronize, 1);

        return new Timing(Median(perCall), perCall.Min(), perCall.Max(), perCall.Length, calls, Median(synced));
    }

    private static double Batch(Action launch, Action synchronize, int calls)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < calls; i++) launch();
        synchronize();
        return Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    /// <summary>The median (mean of the middle two for an even count).</summary>
    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) return double.NaN;
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }
}
