using eMoE.Inference;

namespace eMoE.Cli;

/// <summary>Loads a model for a command, showing progress on a terminal.</summary>
internal static class ModelLoading
{
    public static MoeModel Load(string directory, ModelOptions options)
    {
        if (Console.IsErrorRedirected) return MoeModel.Load(directory, options);
        var progress = new TerminalProgress();
        var model = MoeModel.Load(directory, options, progress);
        progress.Done();
        return model;
    }

    /// <summary>Redraws one stderr line at most ten times a second.</summary>
    private sealed class TerminalProgress : IProgress<LoadProgress>
    {
        private long _lastTicks;
        private bool _drawn;

        public void Report(LoadProgress p)
        {
            long now = Environment.TickCount64;
            if (now - _lastTicks < 100 && p.TensorsDone < p.TensorsTotal) return;
            _lastTicks = now;
            _drawn = true;
            Console.Error.Write($"\rloading: {Units.Bytes(p.BytesDone)} / {Units.Bytes(p.BytesTotal)}, {p.TensorsDone}/{p.TensorsTotal} tensors   ");
        }

        public void Done()
        {
            if (_drawn) Console.Error.Write("\r" + new string(' ', 72) + "\r");
        }
    }
}

/// <summary>Human-readable units.</summary>
internal static class Units
{
    public static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.00} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
        >= 1L << 10 => $"{bytes / 1024.0:0.0} KiB",
        _ => $"{bytes} B",
    };
}
