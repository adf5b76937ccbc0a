using eMoE.Inference;
using eMoE.Scheduling;
using Prometheus;

namespace eMoE.Server;

/// <summary>
/// The server's Prometheus metrics, in a registry of its own (several servers in one process do not
/// mix). Counters and histograms are updated as requests end; gauges and the engine's and expert
/// cache's cumulative counters are read from <see cref="EngineStats"/> and <see cref="MoeModel.ExpertStats"/>
/// at each scrape.
/// </summary>
internal sealed class ServerMetrics
{
    /// <summary>Outcomes of a generation request (label <c>outcome</c> of emoe_requests_total).</summary>
    public static class Outcomes
    {
        public const string Stop = "stop", Length = "length", Cancelled = "cancelled", Rejected = "rejected", Error = "error";
    }

    private readonly Counter _requests, _promptTokens, _generationTokens, _sloRequests, _sloMet;
    private readonly Histogram _ttft, _tpot, _e2e;
    private readonly Gauge _running, _waiting, _inFlight, _kvUsage, _kvUsedBytes, _kvBytes, _sloAttainment, _loaded;
    private readonly Counter _hits, _misses, _bytesCopied, _stall, _steps, _preemptions, _enginePrefill, _engineSampled;
    private readonly object _sloLock = new();
    private readonly Dictionary<string, (long Met, long Total)> _slo = new(StringComparer.Ordinal);

    public CollectorRegistry Registry { get; } = Metrics.NewCustomRegistry();

    public ServerMetrics(Func<MoeModel?> model, Func<int> inFlight)
    {
        var f = Metrics.WithCustomRegistry(Registry);
        _requests = f.CreateCounter("emoe_requests_total",
            "Generation requests by endpoint and outcome: stop, length (finished), cancelled (the client went away), rejected (429), error (any other error answer)",
            "endpoint", "outcome");
        _promptTokens = f.CreateCounter("emoe_prompt_tokens_total", "Prompt tokens of the requests that reached the engine");
        _generationTokens = f.CreateCounter("emoe_generation_tokens_total", "Tokens generated (cancelled requests' included)");
        var latency = Histogram.ExponentialBuckets(0.001, 2, 18); // 1 ms .. about 131 s
        _ttft = f.CreateHistogram("emoe_time_to_first_token_seconds", "From the request's arrival to its first generated token",
            new HistogramConfiguration { Buckets = latency });
        _tpot = f.CreateHistogram("emoe_time_per_output_token_seconds", "Mean time per output token after the first, per request",
            new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.0001, 2, 18) });
        _e2e = f.CreateHistogram("emoe_e2e_request_latency_seconds", "From the request's arrival to its last token", new HistogramConfiguration { Buckets = latency });
        _sloRequests = f.CreateCounter("emoe_slo_requests_total", "Finished requests that carried an SLO, by task", "task");
        _sloMet = f.CreateCounter("emoe_slo_met_total", "Finished requests that met their SLO (TTFT and TPOT), by task", "task");
        _sloAttainment = f.CreateGauge("emoe_slo_attainment_ratio", "Share of a task's SLO requests that met their SLO", "task");

        _running = f.CreateGauge("emoe_requests_running", "Sequences running in the engine");
        _waiting = f.CreateGauge("emoe_requests_waiting", "Sequences waiting in the engine for room in the batch");
        _inFlight = f.CreateGauge("emoe_http_requests_in_flight", "Generation requests admitted by the server (running, waiting, or being answered)");
        _kvUsage = f.CreateGauge("emoe_kv_cache_usage_ratio", "Share of the paged KV cache's blocks held (1 = full)");
        _kvUsedBytes = f.CreateGauge("emoe_kv_cache_used_bytes", "KV cache bytes held");
        _kvBytes = f.CreateGauge("emoe_kv_cache_bytes", "KV cache bytes in the pool");
        _loaded = f.CreateGauge("emoe_model_loaded", "1 once the model is loaded and serving");
        _hits = f.CreateCounter("emoe_expert_cache_hits_total", "Expert requests found resident on the device");
        _misses = f.CreateCounter("emoe_expert_cache_misses_total", "Expert requests copied on demand");
        _bytesCopied = f.CreateCounter("emoe_expert_bytes_copied_total", "Bytes of expert weights copied host to device");
        _stall = f.CreateCounter("emoe_expert_stall_seconds_total", "Seconds the compute waited for expert copies");
        _steps = f.CreateCounter("emoe_engine_steps_total", "Forward steps the engine ran");
        _preemptions = f.CreateCounter("emoe_engine_preemptions_total", "Running sequences preempted for KV room (recomputed later)");
        _enginePrefill = f.CreateCounter("emoe_engine_prefill_tokens_total", "Prompt and recomputed tokens fed by the engine");
        _engineSampled = f.CreateCounter("emoe_engine_sampled_tokens_total", "Tokens the engine sampled");

        Registry.AddBeforeCollectCallback(() =>
        {
            _inFlight.Set(inFlight());
            if (model() is not { } m)
            {
                _loaded.Set(0);
                return;
            }
            _loaded.Set(1);
            var engine = m.EngineStats;
            _running.Set(engine.Running);
            _waiting.Set(engine.Waiting);
            _kvUsage.Set(engine.KvBlocks == 0 ? 0 : (double)engine.KvBlocksUsed / engine.KvBlocks);
            _kvUsedBytes.Set(engine.KvBytesUsed);
            _kvBytes.Set((double)engine.KvBlocks * engine.KvBlockBytes);
            _steps.IncTo(engine.Steps);
            _preemptions.IncTo(engine.Preemptions);
            _enginePrefill.IncTo(engine.PrefillTokens);
            _engineSampled.IncTo(engine.SampledTokens);
            var experts = m.ExpertStats.Overall;
            _hits.IncTo(experts.Hits);
            _misses.IncTo(experts.Misses);
            _bytesCopied.IncTo(experts.BytesCopied);
            _stall.IncTo(experts.StallSeconds);
        });
    }

    /// <summary>Counts a generation request once, when it ends.</summary>
    public void Finished(string endpoint, string outcome) => _requests.WithLabels(endpoint, outcome).Inc();

    /// <summary>What one request used and how fast it was served.</summary>
    public void Served(int promptTokens, int generatedTokens, TimeSpan? ttft, TimeSpan? tpot, TimeSpan? e2e)
    {
        _promptTokens.Inc(promptTokens);
        _generationTokens.Inc(generatedTokens);
        if (ttft is { } a) _ttft.Observe(a.TotalSeconds);
        if (tpot is { } b) _tpot.Observe(b.TotalSeconds);
        if (e2e is { } c) _e2e.Observe(c.TotalSeconds);
    }

    /// <summary>A finished request with an SLO: whether it met it, per task (label "" for none).</summary>
    public void Slo(string? task, bool met)
    {
        string label = task ?? "";
        _sloRequests.WithLabels(label).Inc();
        if (met) _sloMet.WithLabels(label).Inc();
        lock (_sloLock)
        {
            var (m, t) = _slo.GetValueOrDefault(label);
            _slo[label] = (m + (met ? 1 : 0), t + 1);
            _sloAttainment.WithLabels(label).Set((double)_slo[label].Met / _slo[label].Total);
        }
    }
}
