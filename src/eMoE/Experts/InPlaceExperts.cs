using eMoE.Compute;
using eMoE.Compute.Host;
using eMoE.Model;

namespace eMoE.Experts;

/// <summary>
/// The host backend's experts: every expert is resident by definition, read in place from the
/// memory-mapped checkpoint (gate, up and down tensors as stored), so nothing is ever copied,
/// evicted or rerouted. Requests are still counted (all hits), so statistics read the same as a
/// device cache's.
/// </summary>
internal sealed unsafe class InPlaceExperts : IExpertResidency
{
    private readonly ModelConfig _c;
    private readonly ComputeBackend _backend;
    private readonly ResolvedExpertOptions _options;
    private readonly ResidencyBook _book;
    private readonly HostExpertPass[] _passes;     // [L]
    private readonly object _lock = new();

    public InPlaceExperts(ComputeBackend backend, ModelConfig config, Checkpoint checkpoint, ExpertCacheOptions options)
    {
        _backend = backend;
        _c = config;
        _options = options.Resolve(config);
        int total = config.NumLayers * config.NumExperts;
        _book = new ResidencyBook(total, config.NumLayers, EvictionPolicy.Create(EvictionPolicyKind.Lru));
        _book.PreloadAll(config.NumExperts);
        _passes = new HostExpertPass[config.NumLayers];
        for (int l = 0; l < config.NumLayers; l++)
        {
            var gate = new HostWeight[config.NumExperts];
            var up = new HostWeight[config.NumExperts];
            var down = new HostWeight[config.NumExperts];
            for (int e = 0; e < config.NumExperts; e++)
            {
                var (g, u, d) = WeightLayout.Expert(config, l, e);
                gate[e] = InPlace(checkpoint, checkpoint.Require(g, config.ExpertIntermediateSize, config.HiddenSize));
                up[e] = InPlace(checkpoint, checkpoint.Require(u, config.ExpertIntermediateSize, config.HiddenSize));
                down[e] = InPlace(checkpoint, checkpoint.Require(d, config.HiddenSize, config.ExpertIntermediateSize));
            }
            _passes[l] = new HostExpertPass(gate, up, down, [.. Enumerable.Repeat(true, config.NumExperts)]);
        }
        ExpertBytes = 3L * config.ExpertIntermediateSize * config.HiddenSize * _passes[0].Gate[0].DType.ItemSize();
        // Offloading settings describe a device cache; here every expert is already in (host) memory.
        if (_options.Budget.SlotCount(ExpertBytes, total, config.TopK) < total || _options.Pregate || _options.OnMiss != MissMode.Load || _options.Hybrid)
            throw new ArgumentException("the host backend reads every expert in place from host memory: an expert memory budget, pre-gating, " +
                "rerouting and hybrid execution apply to a device's expert cache (use --device cuda, opencl or ilgpu-cpu)");
    }

    private static HostWeight InPlace(Checkpoint checkpoint, TensorInfo tensor) => new((void*)checkpoint.Pointer(tensor), tensor.ElementCount, tensor.DType);

    public MissMode OnMiss => _options.OnMiss;
    public bool Pregate => _options.Pregate;
    public int PregateWidth => _options.PregateWidth;
    public Prediction.FittedPregate? FittedPregate => _options.FittedPregate;
    public int Slots => TotalExperts;
    public int TotalExperts => _c.NumLayers * _c.NumExperts;
    public long ExpertBytes { get; }
    public double? CopyBytesPerSecond => null;

    public void BeginStep()
    {
        lock (_lock) _book.BeginStep();
    }

    public IEnumerable<ExpertPass> Passes(int layer, ReadOnlyMemory<int> expertIds, ReadOnlyMemory<int> lookahead)
    {
        lock (_lock)
        {
            _book.UnpinAll();
            foreach (var pass in ResidencyBook.Passes(expertIds.Span, TotalExperts))
            {
                foreach (int e in pass) _book.Request(new ExpertKey(layer, e), out _, out _);
            }
        }
        return [_passes[layer]];
    }

    public bool Reroute(int layer, Span<int> ids, Span<float> weights, ReadOnlySpan<float> probabilities, int topK) => false; // nothing is ever absent

    public void SetPredictedSet(IReadOnlyCollection<ExpertKey> predicted, bool waitForCopies = false) { }

    public void Prefetch(IEnumerable<ExpertKey> keys) { }

    public long AbsentBytes(IEnumerable<ExpertKey> keys) => 0;

    public void WaitForPendingCopies() { }

    public ResidencyStats Snapshot()
    {
        lock (_lock)
        {
            var (layers, overall) = _book.CopyCounters();
            return new ResidencyStats
            {
                Policy = "in place (host)",
                Slots = Slots,
                TotalExperts = TotalExperts,
                ExpertBytes = ExpertBytes,
                SlotBytes = 0,
                ResidentExpertBytes = ExpertBytes * TotalExperts,
                PeakDeviceBytes = _backend.PeakAllocatedBytes,
                Overall = overall,
                Layers = layers,
            };
        }
    }

    public void Dispose() { }
}
