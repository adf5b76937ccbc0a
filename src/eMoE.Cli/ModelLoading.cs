using eMoE.Compute;
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
            Console.Error.Write($"\rloading: {ByteSize.Format(p.BytesDone)} / {ByteSize.Format(p.BytesTotal)}, {p.TensorsDone}/{p.TensorsTotal} tensors   ");
        }

        public void Done()
        {
            if (_drawn) Console.Error.Write("\r" + new string(' ', 72) + "\r");
        }
    }
}
