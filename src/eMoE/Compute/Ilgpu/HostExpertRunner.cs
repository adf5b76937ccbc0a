using System.Diagnostics;
using System.Runtime.InteropServices;
using eMoE.Compute.Host;

namespace eMoE.Compute.Ilgpu;

/// <summary>
/// Hybrid execution on an ILGPU device: runs the experts a layer keeps on the host with the host
/// kernels, where their weights already are (the page-locked expert store). The tokens'
/// normalised activations come down, the host experts' output rows go back up into the device's
/// per-assignment output; the device then combines every assignment as usual. Only activations
/// cross the link, never weights.
/// </summary>
internal sealed unsafe class HostExpertRunner : IDisposable
{
    private readonly WorkerPool _pool;
    private readonly int _experts, _hidden, _intermediate;
    private NativeArray<float> _x, _hiddenActs, _output;
    private NativeArray<int> _ids, _order, _offsets, _selected;

    public HostExpertRunner(int threads, int experts, int hidden, int intermediate)
    {
        _pool = new WorkerPool(threads);
        _experts = experts;
        _hidden = hidden;
        _intermediate = intermediate;
        _offsets = new NativeArray<int>(experts + 1);
    }

    /// <summary>Seconds the last <see cref="Run"/> took (transfers included).</summary>
    public double LastSeconds { get; private set; }

    /// <summary>
    /// Computes the assignments of the experts <paramref name="pass"/> marks present, for the step's
    /// <see cref="ExpertOp.Tokens"/> tokens, into their rows of <see cref="ExpertOp.Output"/>.
    /// </summary>
    public void Run(IlgpuBackend device, in ExpertOp op, HostExpertPass pass)
    {
        long start = Stopwatch.GetTimestamp();
        int t = op.Tokens, k = op.TopK, h = _hidden, assignments = t * k;
        _x.EnsureCapacity((long)t * h);
        _ids.EnsureCapacity(assignments);
        _order.EnsureCapacity(assignments);
        _hiddenActs.EnsureCapacity((long)assignments * _intermediate);
        _output.EnsureCapacity((long)assignments * h);
        _selected.EnsureCapacity(assignments);
        ExpertRows.Download(device, op, _x.Span((long)t * h), _ids.Span(assignments));
        HostKernels.GroupByExpert(_ids.Pointer, _offsets.Pointer, _order.Pointer, assignments, _experts);
        HostKernels.ExpertFfn(_pool, _x.Pointer, _ids.Pointer, _order.Pointer, _offsets.Pointer, pass.Gate, pass.Up, pass.Down, pass.Present,
            _hiddenActs.Pointer, _output.Pointer, t, k, h, _intermediate);
        // Up go only the rows of host experts: the device wrote the others.
        int selected = ExpertRows.Select(_ids.Span(assignments), pass.Present, _selected.Span(assignments));
        for (int i = 0; i < selected; i++)
        {
            int a = _selected.Pointer[i];
            device.Upload(new ReadOnlySpan<float>(_output.Pointer + (long)a * h, h), op.Output.Slice((long)a * h, h));
        }
        LastSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    /// <summary>
    /// Seconds the host takes for <paramref name="tokens"/> assignments of one expert of
    /// <paramref name="pass"/> (median of five runs after a warm-up, each on another expert so the
    /// weights are not all in cache), plus the pass's own round trip to <paramref name="device"/>:
    /// a synchronisation, the activations down and an output row up. The cost model of hybrid
    /// auto execution, before real passes refine it.
    /// </summary>
    public double MeasureSeconds(IlgpuBackend device, HostExpertPass pass, int tokens)
    {
        _x.EnsureCapacity((long)tokens * _hidden);
        _ids.EnsureCapacity(tokens);
        _order.EnsureCapacity(tokens);
        _hiddenActs.EnsureCapacity((long)tokens * _intermediate);
        _output.EnsureCapacity((long)tokens * _hidden);
        _x.Span((long)tokens * _hidden).Clear();
        using var probe = device.AllocateDevice<float>((long)tokens * _hidden);
        var present = new bool[_experts];
        var times = new double[6];
        for (int run = 0; run < times.Length; run++)
        {
            int expert = run % _experts;
            _ids.Span(tokens).Fill(expert);
            Array.Clear(present);
            present[expert] = true;
            long start = Stopwatch.GetTimestamp();
            device.Synchronize();
            probe.Download(_x.Span((long)tokens * _hidden));
            HostKernels.GroupByExpert(_ids.Pointer, _offsets.Pointer, _order.Pointer, tokens, _experts);
            HostKernels.ExpertFfn(_pool, _x.Pointer, _ids.Pointer, _order.Pointer, _offsets.Pointer, pass.Gate, pass.Up, pass.Down, present,
                _hiddenActs.Pointer, _output.Pointer, tokens, 1, _hidden, _intermediate);
            for (int t = 0; t < tokens; t++) probe.Upload(new ReadOnlySpan<float>(_output.Pointer + (long)t * _hidden, _hidden), (long)t * _hidden);
            times[run] = Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        Array.Sort(times, 1, times.Length - 1);
        return times[1 + (times.Length - 1) / 2];
    }

    public void Dispose()
    {
        _pool.Dispose();
        _x.Dispose();
        _hiddenActs.Dispose();
        _output.Dispose();
        _ids.Dispose();
        _order.Dispose();
        _offsets.Dispose();
        _selected.Dispose();
    }

    /// <summary>Native scratch that grows to the largest step seen.</summary>
    private struct NativeArray<T>(long length) : IDisposable where T : unmanaged
    {
        private long _length = length;

        public T* Pointer { get; private set; } = length > 0 ? (T*)NativeMemory.AlignedAlloc((nuint)(length * sizeof(T)), 64) : null;

        public readonly Span<T> Span(long length) => new(Pointer, checked((int)length));

        public void EnsureCapacity(long length)
        {
            if (length <= _length && Pointer != null) return;
            if (Pointer != null) NativeMemory.AlignedFree(Pointer);
            _length = Math.Max(length, 2 * _length);
            Pointer = (T*)NativeMemory.AlignedAlloc((nuint)(_length * sizeof(T)), 64);
        }

        public void Dispose()
        {
            if (Pointer != null) NativeMemory.AlignedFree(Pointer);
            Pointer = null;
            _length = 0;
        }
    }
}

/// <summary>A layer's host-side pass on an ILGPU device: the experts to run on the host and who runs them.</summary>
internal sealed class HybridHostPass(HostExpertPass experts, HostExpertRunner runner) : ExpertPass
{
    public HostExpertPass Experts { get; } = experts;
    public HostExpertRunner Runner { get; } = runner;
}
