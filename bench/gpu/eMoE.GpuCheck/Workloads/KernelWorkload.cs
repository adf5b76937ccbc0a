using eMoE.Compute;
using eMoE.Kernels;
using ILGPU;

namespace eMoE.GpuCheck.Workloads;

/// <summary>The kernels of one decode step that <see cref="KernelWorkload"/> launches.</summary>
public enum DecodeKernel
{
    Embedding,
    RmsNorm,
    /// <summary>The q projection: a GEMV with a [heads x head_dim, hidden] weight.</summary>
    MatMulQProj,
    /// <summary>The LM head: a GEMV with a [vocab, hidden] weight, the largest dense matrix.</summary>
    MatMulLmHead,
    /// <summary>RoPE on this token's q and k, and its k and v written to the cache, at the last position.</summary>
    Rope,
    /// <summary>Decode attention at the last position of the context (255 shipped, 1023 Mixtral).</summary>
    Attention,
    RouterSoftmaxTopK,
    RouterGroupByExpert,
    /// <summary>Gate and up projections of the token's top-k experts.</summary>
    ExpertGateUp,
    /// <summary>Down projections of the token's top-k experts.</summary>
    ExpertDown,
    /// <summary>The top-k expert outputs, weighted and added to the residual.</summary>
    ExpertCombine,
    SampleGreedy,
    /// <summary>Temperature 1, top-p 0.9.</summary>
    SampleTopP,
}

/// <summary>
/// Every kernel of one decode step (T = 1) at one model shape, launched as the engine launches it.
/// Weights are random (the kernels' speed does not depend on the values) and allocated once. Only
/// the two chosen experts' weights exist: the kernels read no others. The BenchmarkDotNet kernel
/// benchmarks (bench/eMoE.Benchmarks) and the GPU check's timings both run these launches.
/// </summary>
internal sealed class KernelWorkload : IDisposable
{
    private const float TopP = 0.9f;
    // The token's sequence holds the whole context in blocks 0, 1, ... of the KV pool; the token is at its last position.
    private const int BlockSize = 16;

    private readonly DeviceRig _rig;
    private readonly BenchShape _s;
    private readonly int _lanes;

    // One token's activations and the weights it meets.
    private readonly ArrayView<int> _token;
    private readonly ArrayView<float> _x, _xn, _q, _k, _v, _attn, _scores, _logits, _routerLogits, _hidden, _expertOut;
    private readonly WeightView _normWeight, _qProj, _lmHead, _expertSlots;
    private readonly ArrayView<float> _kCache, _vCache, _cos, _sin;
    private readonly ArrayView<int> _expertIds, _slotOfExpert, _offsets, _order, _sampled;
    private readonly ArrayView<float> _expertWeights;
    private readonly ArrayView<int> _position, _cacheRow, _sequenceOf, _blockTable, _topK;
    private readonly ArrayView<float> _greedy, _hot, _noTopP, _topP, _uniform;

    public ShapeName ShapeName { get; }
    public BenchShape Shape => _s;

    /// <summary>The device the kernels run on.</summary>
    public DeviceRig Rig => _rig;

    public KernelWorkload(ShapeName shape, DeviceSpec device)
    {
        ShapeName = shape;
        _s = BenchShape.Of(shape);
        _rig = new DeviceRig(device);
        try
        {
            _lanes = _rig.Lanes;
            int h = _s.Hidden, type = _s.WeightType;

            _token = _rig.Upload<int>([7]);
            _x = _rig.Random(h);
            _xn = _rig.Random(h);
            _q = _rig.Random(_s.QDim);
            _k = _rig.Random(_s.KvDim);
            _v = _rig.Random(_s.KvDim);
            _attn = _rig.Zeros<float>(_s.QDim);
            _scores = _rig.Zeros<float>((long)_s.Heads * _s.Context);
            _logits = _rig.Random(_s.Vocab, 5f);
            _routerLogits = _rig.Random(_s.Experts, 2f);
            _hidden = _rig.Zeros<float>((long)_s.TopK * _s.Intermediate);
            _expertOut = _rig.Zeros<float>((long)_s.TopK * _s.Hidden);

            _normWeight = _rig.RandomWeights(h, type, 1f);
            _qProj = _rig.RandomWeights((long)_s.QDim * h, type);
            _lmHead = _rig.RandomWeights((long)_s.Vocab * h, type); // also the embedding table (same shape)
            _expertSlots = _rig.RandomWeights(_s.TopK * _s.ExpertSlotElements, type);

            _kCache = _rig.Random((long)_s.Context * _s.KvDim);
            _vCache = _rig.Random((long)_s.Context * _s.KvDim);
            var (cos, sin) = RopeKernels.Tables(_s.Context, _s.HeadDim, 1e6f);
            _cos = _rig.Upload<float>(cos);
            _sin = _rig.Upload<float>(sin);

            // The token goes to experts 0..K-1, which live in slots 0..K-1 (slot = expert mod K).
            _expertIds = _rig.Upload<int>([.. Enumerable.Range(0, _s.TopK)]);
            _expertWeights = _rig.Upload<float>([.. Enumerable.Repeat(1f / _s.TopK, _s.TopK)]);
            _order = _rig.Upload<int>([.. Enumerable.Range(0, _s.TopK)]);
            _slotOfExpert = _rig.Upload<int>([.. Enumerable.Range(0, _s.Experts).Select(e => e % _s.TopK)]);
            // What GroupByExpert writes for these ids, so that the expert kernels can also run on their own.
            _offsets = _rig.Upload<int>([.. Enumerable.Range(0, _s.Experts + 1).Select(e => Math.Min(e, _s.TopK))]);
            _sampled = _rig.Zeros<int>(1);
            _position = _rig.Upload<int>([_s.Context - 1]);
            _cacheRow = _rig.Upload<int>([_s.Context - 1]);
            _sequenceOf = _rig.Upload<int>([0]);
            _blockTable = _rig.Upload<int>([.. Enumerable.Range(0, (_s.Context + BlockSize - 1) / BlockSize)]);
            _topK = _rig.Upload<int>([0]);
            _greedy = _rig.Upload<float>([0f]);
            _hot = _rig.Upload<float>([1f]);
            _noTopP = _rig.Upload<float>([1f]);
            _topP = _rig.Upload<float>([TopP]);
            _uniform = _rig.Upload<float>([0.5f]);
            _rig.Synchronize();
        }
        catch
        {
            _rig.Dispose();
            throw;
        }
    }

    /// <summary>Queues one launch of <paramref name="kernel"/> on the device's stream (does not wait).</summary>
    public void Launch(DecodeKernel kernel)
    {
        switch (kernel)
        {
            case DecodeKernel.Embedding:
                _rig.Kernels.Embedding(_rig.Stream, _rig.Launch(_s.Hidden), _token, _lmHead, _x, 1, _s.Hidden);
                break;
            case DecodeKernel.RmsNorm:
                _rig.Kernels.RmsNorm(_rig.Stream, _rig.Launch(1, _lanes), _x, _normWeight, _xn, 1, _s.Hidden, 1e-5f, _lanes);
                break;
            case DecodeKernel.MatMulQProj:
                MatMul(_qProj, _q, _s.QDim);
                break;
            case DecodeKernel.MatMulLmHead:
                MatMul(_lmHead, _logits, _s.Vocab);
                break;
            case DecodeKernel.Rope:
                _rig.Kernels.RopeAndCache(_rig.Stream, _rig.Launch((long)(_s.Heads + _s.KvHeads) * _s.HeadDim / 2), new RopeArgs
                {
                    Q = _q, K = _k, V = _v, KCache = _kCache, VCache = _vCache, Positions = _position, CacheRows = _cacheRow, Cos = _cos, Sin = _sin,
                    Tokens = 1, Heads = _s.Heads, KvHeads = _s.KvHeads, HeadDim = _s.HeadDim,
                });
                break;
            case DecodeKernel.Attention:
                _rig.Kernels.Attention(_rig.Stream, _rig.Launch(_s.Heads, _lanes), new AttentionArgs
                {
                    Q = _q, KCache = _kCache, VCache = _vCache, Positions = _position, SequenceOf = _sequenceOf, BlockTables = _blockTable,
                    Scores = _scores, Output = _attn, Tokens = 1, Heads = _s.Heads, KvHeads = _s.KvHeads, HeadDim = _s.HeadDim, MaxSeq = _s.Context,
                    BlockSize = BlockSize, MaxBlocks = (_s.Context + BlockSize - 1) / BlockSize,
                }, _lanes);
                break;
            case DecodeKernel.RouterSoftmaxTopK:
                _rig.Kernels.SoftmaxTopK(_rig.Stream, _rig.Launch(1), new RouterArgs
                {
                    Logits = _routerLogits, ExpertIds = _expertIds, ExpertWeights = _expertWeights, Tokens = 1,
                    Experts = _s.Experts, TopK = _s.TopK, Renormalize = 1,
                });
                break;
            case DecodeKernel.RouterGroupByExpert:
                _rig.Kernels.GroupByExpert(_rig.Stream, _rig.Launch(_s.Experts), new GroupArgs
                {
                    ExpertIds = _expertIds, Offsets = _offsets, Order = _order, Assignments = _s.TopK, Experts = _s.Experts,
                });
                break;
            case DecodeKernel.ExpertGateUp:
                _rig.Kernels.ExpertGateUp(_rig.Stream, _rig.Launch(ExpertKernels.GateUpItems(1, _s.TopK, _s.Experts, _s.Intermediate), _lanes), ExpertArgs(), _lanes);
                break;
            case DecodeKernel.ExpertDown:
                _rig.Kernels.ExpertDown(_rig.Stream, _rig.Launch(ExpertKernels.DownItems(1, _s.TopK, _s.Experts, _s.Hidden), _lanes), ExpertArgs(), _lanes);
                break;
            case DecodeKernel.ExpertCombine:
                _rig.Kernels.ExpertCombine(_rig.Stream, _rig.Launch(_s.Hidden), ExpertArgs());
                break;
            case DecodeKernel.SampleGreedy:
                Sample(temperature: _greedy, topP: _noTopP);
                break;
            case DecodeKernel.SampleTopP:
                Sample(temperature: _hot, topP: _topP);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(kernel), kernel, null);
        }
    }

    /// <summary>Waits until every queued launch has finished.</summary>
    public void Synchronize() => _rig.Synchronize();

    private void MatMul(WeightView w, ArrayView<float> y, int n) =>
        _rig.Kernels.MatMul(_rig.Stream, _rig.Launch(n, _lanes), new MatMulArgs
        {
            X = _xn, W = w, Y = y, Tokens = 1, N = n, K = _s.Hidden, Accumulate = 0,
        }, _lanes);

    private ExpertArgs ExpertArgs() => new()
    {
        X = _xn, ExpertIds = _expertIds, ExpertWeights = _expertWeights, Order = _order, Offsets = _offsets, SlotOfExpert = _slotOfExpert,
        Slab = _expertSlots, Hidden = _hidden, Output = _expertOut, Residual = _x, Tokens = 1, TopK = _s.TopK,
        HiddenSize = _s.Hidden, Intermediate = _s.Intermediate, Experts = _s.Experts,
    };

    private void Sample(ArrayView<float> temperature, ArrayView<float> topP) =>
        _rig.Kernels.Sample(_rig.Stream, _rig.Launch(1), new SampleArgs
        {
            Logits = _logits, Tokens = _sampled, Rows = 1, Vocab = _s.Vocab, Temperature = temperature, TopK = _topK, TopP = topP, Uniform = _uniform,
        });

    /// <summary>
    /// Bytes a call must read from memory at least (weights, or the KV cache for attention), for the
    /// GB/s figures; null where it says little (kernels bound by arithmetic or launch cost).
    /// </summary>
    public static long? BytesPerCall(DecodeKernel kernel, ShapeName shape)
    {
        var s = BenchShape.Of(shape);
        long h = s.Hidden, w = s.WeightBytes;
        return kernel switch
        {
            DecodeKernel.MatMulQProj => s.QDim * h * w,
            DecodeKernel.MatMulLmHead => s.Vocab * h * w,
            DecodeKernel.ExpertGateUp => s.TopK * 2L * s.Intermediate * h * w,
            DecodeKernel.ExpertDown => s.TopK * (long)s.Intermediate * h * w,
            DecodeKernel.Attention => 2L * s.Context * s.KvDim * sizeof(float),
            _ => null,
        };
    }

    public void Dispose() => _rig.Dispose();
}
