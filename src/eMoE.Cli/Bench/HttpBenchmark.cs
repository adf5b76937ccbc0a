using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using eMoE.Compute;
using eMoE.Inference;
using eMoE.Model;
using eMoE.Scheduling;
using eMoE.Server;

namespace eMoE.Cli.Bench;

/// <summary>What `emoe bench http` runs.</summary>
/// <param name="Requests">Requests of the load phase.</param>
/// <param name="Concurrency">Clients: at most this many requests in flight.</param>
/// <param name="Rate">Poisson arrival rate of the load phase in requests/s; null: <see cref="HttpBenchmark.LoadMultiple"/> x the calibrated capacity.</param>
/// <param name="MaxTokens">Cap on each request's max_tokens (its task's otherwise); null: no cap.</param>
/// <param name="MaxBatch">The server's batch limit.</param>
/// <param name="MaxWaiting">Requests the server lets wait beyond the running ones (the next is answered 429).</param>
/// <param name="CancelFraction">Share of all requests cancelled mid-stream (chosen among the streaming half).</param>
/// <param name="LightRequests">Requests of the light-load comparison (each run in process and over HTTP).</param>
/// <param name="LightRate">Arrival rate of the light-load phase; null: <see cref="HttpBenchmark.LightMultiple"/> x the calibrated capacity.</param>
/// <param name="Seed">Seed of the arrivals, the request mix and the cancellation points.</param>
/// <param name="Timeout">Bound on the whole run; what has not completed by then counts as lost.</param>
internal sealed record HttpBenchOptions(int Requests, int Concurrency, double? Rate, int? MaxTokens, int MaxBatch, int MaxWaiting, double CancelFraction,
    int LightRequests, double? LightRate, int Seed, TimeSpan Timeout);

/// <summary>How one HTTP request ended, as the client saw it.</summary>
internal enum HttpOutcome
{
    /// <summary>A whole answer: finish_reason and usage (streamed: every chunk, then [DONE]).</summary>
    Complete,

    /// <summary>The client closed the connection after its planned chunk, as planned.</summary>
    Cancelled,

    /// <summary>An OpenAI-shaped error: a status with an {"error": {...}} body, or an error event then [DONE].</summary>
    CleanError,

    /// <summary>Anything else: a connection error, a stream cut without [DONE], malformed JSON, missing usage, or the run's timeout.</summary>
    Lost,
}

/// <summary>One planned request: the prompt, its endpoint, streamed or not, and where (if at all) the client cancels.</summary>
/// <param name="Index">Its place in the workload.</param>
/// <param name="Task">The evaluation task (sent as eMoE's "task" extension).</param>
/// <param name="Prompt">The prompt text (chat: the user message).</param>
/// <param name="Chat">/v1/chat/completions, else /v1/completions.</param>
/// <param name="Stream">Streamed (SSE, with usage) or whole.</param>
/// <param name="CancelAfterChunks">Close the connection after this many content chunks; null: read to the end.</param>
/// <param name="MaxTokens">Its max_tokens.</param>
/// <param name="PromptTokens">The prompt's tokens as the server makes them (chat template for chat; BOS added), computed by the client.</param>
internal sealed record HttpPlan(int Index, string Task, string Prompt, bool Chat, bool Stream, int? CancelAfterChunks, int MaxTokens, int PromptTokens)
{
    public string Endpoint => Chat ? "chat" : "completions";
}

/// <summary>What one HTTP request did, in seconds on the client's clock (from sending the request).</summary>
/// <param name="Plan">The request.</param>
/// <param name="ArrivalS">When it was due, on the phase's clock.</param>
/// <param name="SentS">When a client sent it, on the phase's clock (later when every client was busy).</param>
/// <param name="Outcome">How it ended.</param>
/// <param name="Status">The HTTP status; null when none came.</param>
/// <param name="Finish">finish_reason of a complete answer.</param>
/// <param name="Detail">An error's code, or what was wrong with a lost one.</param>
/// <param name="TtftS">Streamed: to the first chunk with content; not streamed: the whole answer (e2e).</param>
/// <param name="E2eS">To [DONE], the whole body, the cancellation or the failure.</param>
/// <param name="PromptTokens">usage.prompt_tokens of a complete answer.</param>
/// <param name="CompletionTokens">usage.completion_tokens of a complete answer.</param>
/// <param name="Chunks">Content chunks received (streamed).</param>
internal sealed record HttpResult(HttpPlan Plan, double ArrivalS, double SentS, HttpOutcome Outcome, int? Status, string? Finish, string? Detail, double? TtftS,
    double E2eS, int? PromptTokens, int? CompletionTokens, int Chunks)
{
    /// <summary>(e2e - TTFT) / (completion tokens - 1) for streamed complete answers of two or more tokens.</summary>
    public double? TpotS => Plan.Stream && Outcome == HttpOutcome.Complete && CompletionTokens > 1 && TtftS is double t ? (E2eS - t) / (CompletionTokens.Value - 1) : null;
}

/// <summary>One light-load request served in process: the engine's TTFT (as bench serve reports it) and the consumer's.</summary>
internal sealed record InProcessResult(double EngineTtftS, double ClientTtftS, double E2eS, int Tokens);

/// <summary>
/// A minimal OpenAI client over <see cref="HttpClient"/> with raw Server-Sent Events parsing: sends
/// one planned request and classifies how it ended.
/// </summary>
internal sealed class OpenAiLoadClient(HttpClient http, string model)
{
    public async Task<HttpResult> SendAsync(HttpPlan plan, double arrivalS, Stopwatch clock, CancellationToken run)
    {
        double sent = clock.Elapsed.TotalSeconds;
        var start = Stopwatch.GetTimestamp();
        double Since() => Stopwatch.GetElapsedTime(start).TotalSeconds;
        using var request = new HttpRequestMessage(HttpMethod.Post, plan.Chat ? "v1/chat/completions" : "v1/completions")
        {
            Content = new ByteArrayContent(Body(plan)) { Headers = { ContentType = new("application/json") } },
        };
        HttpResult Result(HttpOutcome outcome, int? status, string? finish, string? detail, double? ttft = null, int? prompt = null, int? completion = null, int chunks = 0) =>
            new(plan, arrivalS, sent, outcome, status, finish, detail, ttft, Since(), prompt, completion, chunks);
        try
        {
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, run).ConfigureAwait(false);
            int status = (int)response.StatusCode;
            if (response.StatusCode != HttpStatusCode.OK)
            {
                string body = await response.Content.ReadAsStringAsync(run).ConfigureAwait(false);
                return IsErrorBody(body, out string? code)
                    ? Result(HttpOutcome.CleanError, status, null, code)
                    : Result(HttpOutcome.Lost, status, null, "error status without an OpenAI error body");
            }
            if (!plan.Stream)
            {
                string body = await response.Content.ReadAsStringAsync(run).ConfigureAwait(false);
                double e2e = Since();
                if (!TryParseAnswer(body, plan.Chat, out string? finish, out int prompt, out int completion, out string? problem))
                    return Result(HttpOutcome.Lost, status, null, problem);
                return Result(HttpOutcome.Complete, status, finish, null, e2e, prompt, completion);
            }
            return await ReadStreamAsync(plan, response, status, Since, Result, run).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (run.IsCancellationRequested)
        {
            return Result(HttpOutcome.Lost, null, null, "the run's timeout ended it");
        }
        catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException)
        {
            return Result(HttpOutcome.Lost, null, null, $"{e.GetType().Name}: {e.Message}");
        }
    }

    private delegate HttpResult ResultOf(HttpOutcome outcome, int? status, string? finish, string? detail, double? ttft = null, int? prompt = null,
        int? completion = null, int chunks = 0);

    private static async Task<HttpResult> ReadStreamAsync(HttpPlan plan, HttpResponseMessage response, int status, Func<double> since, ResultOf result,
        CancellationToken run)
    {
        if (response.Content.Headers.ContentType?.MediaType != "text/event-stream") return result(HttpOutcome.Lost, status, null, "a stream that is not text/event-stream");
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(run).ConfigureAwait(false), Encoding.UTF8);
        double? ttft = null;
        int chunks = 0;
        string? finish = null, error = null;
        int? prompt = null, completion = null;
        while (await reader.ReadLineAsync(run).ConfigureAwait(false) is string line)
        {
            if (line.Length == 0 || line.StartsWith(':')) continue;
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) return result(HttpOutcome.Lost, status, finish, $"not an SSE data line: '{Clip(line)}'", ttft, chunks: chunks);
            string data = line["data: ".Length..];
            if (data == "[DONE]")
            {
                if (error is not null) return result(HttpOutcome.CleanError, status, null, error, ttft, chunks: chunks);
                if (finish is null) return result(HttpOutcome.Lost, status, null, "[DONE] without a finish_reason", ttft, chunks: chunks);
                if (prompt is null || completion is null) return result(HttpOutcome.Lost, status, finish, "[DONE] without usage", ttft, chunks: chunks);
                return result(HttpOutcome.Complete, status, finish, null, ttft, prompt, completion, chunks);
            }
            try
            {
                using var doc = JsonDocument.Parse(data);
                var root = doc.RootElement;
                if (root.TryGetProperty("error", out var e))
                {
                    if (!IsErrorObject(e, out string? code)) return result(HttpOutcome.Lost, status, null, "a malformed error event", ttft, chunks: chunks);
                    error = code ?? "error";
                    continue;
                }
                if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                {
                    prompt = usage.GetProperty("prompt_tokens").GetInt32();
                    completion = usage.GetProperty("completion_tokens").GetInt32();
                }
                var choices = root.GetProperty("choices");
                if (choices.GetArrayLength() == 0) continue;
                var choice = choices[0];
                string? text = plan.Chat
                    ? choice.GetProperty("delta").TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null
                    : choice.GetProperty("text").GetString();
                if (choice.TryGetProperty("finish_reason", out var f) && f.ValueKind == JsonValueKind.String) finish = f.GetString();
                if (string.IsNullOrEmpty(text)) continue;
                chunks++;
                ttft ??= since();
                if (plan.CancelAfterChunks is int k && chunks >= k)
                {
                    // Closing the connection mid-stream: the response is disposed unread (the handler drains nothing, so the socket closes).
                    return result(HttpOutcome.Cancelled, status, null, null, ttft, chunks: chunks);
                }
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
            {
                return result(HttpOutcome.Lost, status, finish, $"malformed chunk ({ex.GetType().Name}): '{Clip(data)}'", ttft, chunks: chunks);
            }
        }
        return result(HttpOutcome.Lost, status, finish, error is null ? "the stream ended without [DONE]" : $"error event ({error}) without [DONE]", ttft, chunks: chunks);
    }

    private byte[] Body(HttpPlan plan)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("model", model);
            if (plan.Chat)
            {
                json.WriteStartArray("messages");
                json.WriteStartObject();
                json.WriteString("role", "user");
                json.WriteString("content", plan.Prompt);
                json.WriteEndObject();
                json.WriteEndArray();
            }
            else
            {
                json.WriteString("prompt", plan.Prompt);
            }
            json.WriteNumber("max_tokens", plan.MaxTokens);
            json.WriteNumber("temperature", 0);
            json.WriteString("task", plan.Task);
            json.WriteBoolean("stream", plan.Stream);
            if (plan.Stream)
            {
                json.WriteStartObject("stream_options");
                json.WriteBoolean("include_usage", true);
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>A whole answer: choices[0] with its text (chat: message.content), a finish_reason and usage.</summary>
    private static bool TryParseAnswer(string body, bool chat, out string? finish, out int prompt, out int completion, out string? problem)
    {
        finish = null;
        prompt = completion = 0;
        try
        {
            using var doc = JsonDocument.Parse(body);
            var choice = doc.RootElement.GetProperty("choices")[0];
            var text = chat ? choice.GetProperty("message").GetProperty("content") : choice.GetProperty("text");
            if (text.ValueKind != JsonValueKind.String)
            {
                problem = "the answer has no text";
                return false;
            }
            finish = choice.GetProperty("finish_reason").GetString();
            var usage = doc.RootElement.GetProperty("usage");
            prompt = usage.GetProperty("prompt_tokens").GetInt32();
            completion = usage.GetProperty("completion_tokens").GetInt32();
            problem = finish is null ? "the answer has no finish_reason" : null;
            return finish is not null;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or IndexOutOfRangeException)
        {
            problem = $"malformed answer ({e.GetType().Name}): '{Clip(body)}'";
            return false;
        }
    }

    private static bool IsErrorBody(string body, out string? code)
    {
        code = null;
        try
        {
            using var doc = JsonDocument.Parse(body);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("error", out var e) && IsErrorObject(e, out code);
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>OpenAI's error object: a message and a type (code and param may be null).</summary>
    private static bool IsErrorObject(JsonElement error, out string? code)
    {
        code = null;
        if (error.ValueKind != JsonValueKind.Object) return false;
        if (!error.TryGetProperty("message", out var m) || m.ValueKind != JsonValueKind.String) return false;
        if (!error.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String) return false;
        code = error.TryGetProperty("code", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : t.GetString();
        return true;
    }

    private static string Clip(string text) => text.Length <= 120 ? text : text[..120] + "...";
}

/// <summary>The Prometheus text of /metrics as sample (name with labels) to value.</summary>
internal sealed class MetricsSample(Dictionary<string, double> samples)
{
    public static async Task<MetricsSample> ScrapeAsync(HttpClient http, CancellationToken cancel)
    {
        string text = await http.GetStringAsync(new Uri("metrics", UriKind.Relative), cancel).ConfigureAwait(false);
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (string line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            int space = line.LastIndexOf(' ');
            if (space > 0 && double.TryParse(line[(space + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out double value)) samples[line[..space]] = value;
        }
        return new MetricsSample(samples);
    }

    public double this[string name] => samples.GetValueOrDefault(name);

    public double Requests(string endpoint, string outcome) => this[$"emoe_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}}"];

    public double RequestsTotal => samples.Where(s => s.Key.StartsWith("emoe_requests_total{", StringComparison.Ordinal)).Sum(s => s.Value);
}

/// <summary>One check of the server's /metrics against what the clients saw.</summary>
internal sealed record MetricsCheck(string Name, string Expected, string Actual, bool Passed);

/// <summary>
/// `emoe bench http`: a bounded load test of the OpenAI-compatible server, hosted in process on
/// 127.0.0.1 (a free port). A light-load phase first serves the same requests at the same arrival
/// times in process (the server's own model, through <see cref="MoeModel.GenerateIdsAsync"/> as
/// bench serve does) and over HTTP (streamed completions), to compare time to first token. Then the
/// load phase: Poisson arrivals from a pool of clients, chat and text completions, streamed or
/// not, some cancelled mid-stream. Every request must end complete, cancelled as planned or with a
/// clean OpenAI error; afterwards the slots must be free and /metrics must add up.
/// </summary>
internal sealed class HttpBenchmark(string modelDirectory, DeviceSpec device, HttpBenchOptions options, TextWriter log)
{
    /// <summary>Default load rate: 4 x the calibrated capacity (past saturation at batch 1), one of bench serve's default rates.</summary>
    public const double LoadMultiple = 4;

    /// <summary>Default light-load rate: 0.5 x the calibrated capacity, bench serve's lowest default rate.</summary>
    public const double LightMultiple = 0.5;

    /// <summary>The target: HTTP's p99 TTFT under light load within 2 x the in-process engine's.</summary>
    public const double TtftRatioTarget = 2;

    /// <summary>Prompts (one per task, first ones first) served one after another, unloaded, for the calibration.</summary>
    public const int CalibrationPerTask = 2;

    /// <summary>How long the slots may take to be free after the last request (a cancelled request is freed within a step).</summary>
    private static readonly TimeSpan IdleWait = TimeSpan.FromSeconds(30);

    public async Task<(string Markdown, bool Passed)> RunAsync(string outDirectory, CancellationToken cancel)
    {
        double? loadBefore = MachineLoad.OneMinute();
        if (loadBefore is double busy && busy > Environment.ProcessorCount / 2.0)
            log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"warning: 1-minute load average {busy:0.0} on {Environment.ProcessorCount} processors: other work is running, latencies will not be clean"));
        var expected = EvalPrompts.MeanMaxTokens(modelDirectory);
        var prompts = EvalPrompts.LoadInterleaved(modelDirectory, Math.Max(options.Requests, options.LightRequests));
        var tokenizer = MoeTokenizer.Load(modelDirectory);
        var template = ChatTemplate.ForModel(modelDirectory);
        var plans = Plan(prompts, tokenizer, template);
        log.WriteLine($"{plans.Count} requests from {options.Concurrency} clients ({plans.Count(p => p.Stream)} streamed, {plans.Count(p => p.CancelAfterChunks is not null)} to cancel, " +
            $"{plans.Count(p => p.Chat)} chat), device {device}");

        using var run = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        run.CancelAfter(options.Timeout);
        var serverOptions = new ServerOptions
        {
            ModelDirectory = modelDirectory,
            Model = new ModelOptions { Device = device, Engine = new EngineOptions { MaxBatch = options.MaxBatch, ExpectedOutputTokens = expected } },
            Host = "127.0.0.1",
            Port = 0,
            MaxWaiting = options.MaxWaiting,
        };
        await using var server = EmoeServer.Build(serverOptions);
        try
        {
            return await RunAsync(server, plans, prompts, tokenizer, outDirectory, loadBefore, run.Token, cancel);
        }
        catch (OperationCanceledException) when (run.IsCancellationRequested && !cancel.IsCancellationRequested)
        {
            throw new CliException(string.Create(CultureInfo.InvariantCulture, $"the run's timeout ({options.Timeout.TotalSeconds:0} s) passed before the load phase ended"));
        }
    }

    private async Task<(string Markdown, bool Passed)> RunAsync(EmoeServer server, List<HttpPlan> plans, List<EvalPrompt> prompts, MoeTokenizer tokenizer,
        string outDirectory, double? loadBefore, CancellationToken runToken, CancellationToken cancel)
    {
        await server.StartAsync(runToken);
        await server.ModelLoaded.WaitAsync(runToken);
        var model = server.Model!;
        string deviceName = $"{model.Device.Kind}: {model.Device.Name}";
        using var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = options.Concurrency + 1,
            // A response disposed unread closes its connection instead of draining it: the server sees the client go.
            MaxResponseDrainSize = 0,
            UseProxy = false,
        };
        using var http = new HttpClient(handler) { BaseAddress = server.BaseAddress, Timeout = Timeout.InfiniteTimeSpan };
        var client = new OpenAiLoadClient(http, server.ServedModelName);
        log.WriteLine($"server on {server.BaseAddress} (loopback), model on {deviceName}, max batch {options.MaxBatch}, max waiting {options.MaxWaiting}");

        // Warm-up: both endpoints, streamed and not, and the engine in process (first kernel launches compile).
        var warmClock = Stopwatch.StartNew();
        foreach (var (chat, stream) in new[] { (false, true), (true, false), (true, true), (false, false) })
        {
            var warm = await client.SendAsync(plans[0] with { Chat = chat, Stream = stream, MaxTokens = 2, CancelAfterChunks = null }, 0, warmClock, runToken);
            if (warm.Outcome != HttpOutcome.Complete) throw new CliException($"the warm-up request failed: {warm.Outcome} {warm.Status} {warm.Detail}");
        }

        var calibration = await CalibrateAsync(model, prompts, tokenizer, runToken);
        double capacity = 1 / calibration;
        double lightRate = options.LightRate ?? LightMultiple * capacity;
        double rate = options.Rate ?? LoadMultiple * capacity;
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"calibration: mean unloaded e2e {calibration * 1000:0.0} ms, capacity c = {capacity:0.###} req/s; light load {lightRate:0.###} req/s, load {rate:0.###} req/s"));

        // Light load: the same requests at the same arrival times, in process, then over HTTP (streamed completions, none cancelled).
        var light = Enumerable.Range(0, options.LightRequests).Select(i =>
        {
            var p = prompts[i % prompts.Count];
            return new HttpPlan(i, p.Task, p.Prompt, Chat: false, Stream: true, CancelAfterChunks: null, CappedMaxTokens(p),
                tokenizer.Encode(p.Prompt, addSpecialTokens: true).Count);
        }).ToList();
        var lightArrivals = new PoissonArrivals(light.Count, options.Seed + 1).At(lightRate);
        var inProcess = await InProcessAsync(model, light, tokenizer, lightArrivals, runToken);
        var lightHttp = await OpenLoopAsync(client, light, lightArrivals, runToken);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"light load: TTFT p99 in process {LatencySummary.Of(inProcess.Select(r => r.EngineTtftS))?.P99 * 1000:0.0} ms, over HTTP {LatencySummary.Of(lightHttp.Where(r => r.TtftS is not null).Select(r => r.TtftS!.Value))?.P99 * 1000:0.0} ms"));

        // The load phase, counted against /metrics from here.
        var before = await MetricsSample.ScrapeAsync(http, runToken);
        var arrivals = new PoissonArrivals(plans.Count, options.Seed).At(rate);
        var loadClock = Stopwatch.StartNew();
        var results = await OpenLoopAsync(client, plans, arrivals, runToken);
        double duration = loadClock.Elapsed.TotalSeconds;
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"load: {results.Count(r => r.Outcome == HttpOutcome.Complete)} complete, {results.Count(r => r.Outcome == HttpOutcome.Cancelled)} cancelled, " +
            $"{results.Count(r => r.Outcome == HttpOutcome.CleanError)} clean errors, {results.Count(r => r.Outcome == HttpOutcome.Lost)} lost in {duration:0.0} s"));

        // The slots are free (bounded), and every request is counted, then /metrics must add up.
        var (idle, after, idleDetail) = await WaitIdleAsync(http, before, results.Count, cancel);
        var checks = Check(before, after, results, lightHttp, idle, idleDetail);
        double? loadAfter = MachineLoad.OneMinute();

        var report = new HttpReport(modelDirectory, deviceName, model.ContextLength, options, calibration, lightRate, rate, duration, results, inProcess, lightHttp, checks, loadBefore, loadAfter);
        Directory.CreateDirectory(outDirectory);
        File.WriteAllText(Path.Combine(outDirectory, "results.json"), report.Json());
        string markdown = report.Markdown();
        File.WriteAllText(Path.Combine(outDirectory, "results.md"), markdown);
        await server.StopAsync();
        return (markdown, report.Passed);
    }

    /// <summary>
    /// The load phase's requests, deterministic from the seed: prompts of the evaluation set (tasks
    /// interleaved, cycled when there are fewer), half chat and half text completions, half streamed,
    /// the cancelled ones drawn among the streamed, each cancelled after a chunk drawn in 1 .. max_tokens / 2.
    /// </summary>
    private List<HttpPlan> Plan(List<EvalPrompt> prompts, MoeTokenizer tokenizer, ChatTemplate template)
    {
        var random = new Random(options.Seed);
        int n = options.Requests;
        var order = Enumerable.Range(0, n).ToArray();
        random.Shuffle(order);
        var streamed = order.Take((n + 1) / 2).ToHashSet();
        var cancelled = order.Take((int)Math.Round(options.CancelFraction * n)).ToHashSet();
        random.Shuffle(order);
        var chat = order.Take(n / 2).ToHashSet();
        var plans = new List<HttpPlan>(n);
        for (int i = 0; i < n; i++)
        {
            var p = prompts[i % prompts.Count];
            int maxTokens = CappedMaxTokens(p);
            int? cancelAt = cancelled.Contains(i) ? random.Next(1, Math.Max(1, maxTokens / 2) + 1) : null;
            bool isChat = chat.Contains(i);
            int promptTokens = isChat
                ? ChatPrompt.Create(tokenizer, template, [new ChatMessage("user", p.Prompt)]).Ids.Count
                : tokenizer.Encode(p.Prompt, addSpecialTokens: true).Count;
            plans.Add(new HttpPlan(i, p.Task, p.Prompt, isChat, streamed.Contains(i), cancelAt, maxTokens, promptTokens));
        }
        return plans;
    }

    private int CappedMaxTokens(EvalPrompt p) => options.MaxTokens is int cap ? Math.Min(cap, p.MaxTokens) : p.MaxTokens;

    /// <summary>The first prompts of each task, one after another in process (nothing else running): the mean unloaded e2e in seconds.</summary>
    private static async Task<double> CalibrateAsync(MoeModel model, List<EvalPrompt> prompts, MoeTokenizer tokenizer, CancellationToken cancel)
    {
        int tasks = prompts.Select(p => p.Task).Distinct(StringComparer.Ordinal).Count();
        var clock = Stopwatch.StartNew();
        var e2e = new List<double>();
        foreach (var p in prompts.Take(CalibrationPerTask * tasks))
        {
            var request = new ServeRequest(p.Task, tokenizer.Encode(p.Prompt, addSpecialTokens: true), p.MaxTokens);
            e2e.Add((await ServeClient.ServeAsync(model, request, 0, clock, cancel)).E2eS);
        }
        return e2e.Average();
    }

    /// <summary>The light-load requests in process, open loop at their arrival times, on the server's own model.</summary>
    private static async Task<List<InProcessResult>> InProcessAsync(MoeModel model, List<HttpPlan> plans, MoeTokenizer tokenizer, double[] arrivals,
        CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        var running = new List<Task<InProcessResult>>(plans.Count);
        for (int i = 0; i < plans.Count; i++)
        {
            var wait = TimeSpan.FromSeconds(arrivals[i]) - clock.Elapsed;
            if (wait > TimeSpan.Zero) await Task.Delay(wait, cancel).ConfigureAwait(false);
            running.Add(ServeAsync(plans[i]));
        }
        return [.. await Task.WhenAll(running).ConfigureAwait(false)];

        async Task<InProcessResult> ServeAsync(HttpPlan plan)
        {
            var stats = new GenerationStats();
            var options = new GenerationOptions { MaxTokens = plan.MaxTokens, Task = plan.Task };
            long start = Stopwatch.GetTimestamp();
            double? first = null;
            await foreach (int _ in model.GenerateIdsAsync(tokenizer.Encode(plan.Prompt, addSpecialTokens: true), options, stats, cancel).ConfigureAwait(false))
                first ??= Stopwatch.GetElapsedTime(start).TotalSeconds;
            cancel.ThrowIfCancellationRequested();
            double e2e = Stopwatch.GetElapsedTime(start).TotalSeconds;
            return new InProcessResult(stats.TimeToFirstToken.TotalSeconds, first ?? e2e, e2e, stats.GeneratedTokens);
        }
    }

    /// <summary>
    /// Sends each request at its arrival time from a pool of <see cref="HttpBenchOptions.Concurrency"/>
    /// clients (a request due while every client is busy waits for one). Requests not sent before
    /// the run's timeout are lost.
    /// </summary>
    private async Task<List<HttpResult>> OpenLoopAsync(OpenAiLoadClient client, List<HttpPlan> plans, double[] arrivals, CancellationToken run)
    {
        var clock = Stopwatch.StartNew();
        using var pool = new SemaphoreSlim(options.Concurrency);
        var inFlight = new List<Task<HttpResult>>(plans.Count);
        for (int i = 0; i < plans.Count; i++)
        {
            try
            {
                var wait = TimeSpan.FromSeconds(arrivals[i]) - clock.Elapsed;
                if (wait > TimeSpan.Zero) await Task.Delay(wait, run).ConfigureAwait(false);
                await pool.WaitAsync(run).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                for (int j = i; j < plans.Count; j++)
                    inFlight.Add(Task.FromResult(new HttpResult(plans[j], arrivals[j], clock.Elapsed.TotalSeconds, HttpOutcome.Lost, null, null, "not sent before the run's timeout",
                        null, 0, null, null, 0)));
                break;
            }
            inFlight.Add(SendAsync(plans[i], arrivals[i]));
        }
        return [.. await Task.WhenAll(inFlight).ConfigureAwait(false)];

        async Task<HttpResult> SendAsync(HttpPlan plan, double arrival)
        {
            try
            {
                return await client.SendAsync(plan, arrival, clock, run).ConfigureAwait(false);
            }
            finally
            {
                pool.Release();
            }
        }
    }

    /// <summary>
    /// Polls /metrics until nothing runs or waits in the engine, no request is in flight at the
    /// server, the KV cache holds nothing, and every sent request is counted: (true, the scrape) or,
    /// after <see cref="IdleWait"/>, (false, the last scrape, what was still held).
    /// </summary>
    private static async Task<(bool Idle, MetricsSample After, string Detail)> WaitIdleAsync(HttpClient http, MetricsSample before, int requests,
        CancellationToken cancel)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var m = await MetricsSample.ScrapeAsync(http, cancel).ConfigureAwait(false);
            double counted = m.RequestsTotal - before.RequestsTotal;
            string detail = string.Create(CultureInfo.InvariantCulture,
                $"running {m["emoe_requests_running"]}, waiting {m["emoe_requests_waiting"]}, in flight {m["emoe_http_requests_in_flight"]}, " +
                $"KV bytes used {m["emoe_kv_cache_used_bytes"]}, requests counted {counted} of {requests}");
            bool idle = m["emoe_requests_running"] == 0 && m["emoe_requests_waiting"] == 0 && m["emoe_http_requests_in_flight"] == 0 && m["emoe_kv_cache_used_bytes"] == 0
                        && counted >= requests;
            if (idle || deadline.Elapsed > IdleWait) return (idle, m, detail);
            await Task.Delay(50, cancel).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// /metrics against the clients, over the load phase (the differences of two scrapes). A
    /// cancellation can race the end of its answer: when the server wrote the last token before it
    /// saw the connection close, it counts the request finished (stop or length) where the client
    /// counts it cancelled; such races are the only difference allowed, and they are reported.
    /// </summary>
    private static List<MetricsCheck> Check(MetricsSample before, MetricsSample after, List<HttpResult> results, List<HttpResult> light, bool idle, string idleDetail)
    {
        var checks = new List<MetricsCheck> { new("slots free at the end", "running 0, waiting 0, in flight 0, KV 0, every request counted", idleDetail, idle) };
        string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
        int lightLost = light.Count(r => r.Outcome != HttpOutcome.Complete);
        checks.Add(new("light-load requests complete", Inv($"{light.Count}"), Inv($"{light.Count - lightLost}"), lightLost == 0));
        foreach (string endpoint in new[] { "chat", "completions" })
        {
            var mine = results.Where(r => r.Plan.Endpoint == endpoint).ToList();
            double Server(string outcome) => after.Requests(endpoint, outcome) - before.Requests(endpoint, outcome);
            int stop = mine.Count(r => r.Outcome == HttpOutcome.Complete && r.Finish == "stop");
            int length = mine.Count(r => r.Outcome == HttpOutcome.Complete && r.Finish == "length");
            int cancelled = mine.Count(r => r.Outcome == HttpOutcome.Cancelled);
            int rejected = mine.Count(r => r.Outcome == HttpOutcome.CleanError && r.Status == 429);
            int errors = mine.Count(r => r.Outcome == HttpOutcome.CleanError && r.Status != 429);
            double sStop = Server("stop"), sLength = Server("length"), sCancelled = Server("cancelled"), sRejected = Server("rejected"), sError = Server("error");
            double raced = cancelled - sCancelled;
            bool finishedAddUp = sStop >= stop && sLength >= length && sStop - stop + (sLength - length) == raced && raced >= 0;
            checks.Add(new($"{endpoint}: requests by outcome (stop / length / cancelled)",
                Inv($"{stop} / {length} / {cancelled} (clients)"), Inv($"{sStop} / {sLength} / {sCancelled} (server; {raced} cancellations raced the end)"), finishedAddUp));
            checks.Add(new($"{endpoint}: rejected (429) / other errors", Inv($"{rejected} / {errors}"), Inv($"{sRejected} / {sError}"), sRejected == rejected && sError == errors));
            checks.Add(new($"{endpoint}: requests counted", Inv($"{mine.Count}"), Inv($"{sStop + sLength + sCancelled + sRejected + sError}"),
                sStop + sLength + sCancelled + sRejected + sError == mine.Count));
        }
        var complete = results.Where(r => r.Outcome == HttpOutcome.Complete).ToList();
        var cancelledAll = results.Where(r => r.Outcome == HttpOutcome.Cancelled).ToList();
        int usageMismatch = complete.Count(r => r.PromptTokens != r.Plan.PromptTokens);
        checks.Add(new("usage.prompt_tokens = the client's count of the prompt", Inv($"{complete.Count} equal"), Inv($"{complete.Count - usageMismatch} equal"), usageMismatch == 0));
        // Every complete or cancelled request reached the engine; clean errors (429, 4xx) did not.
        long prompt = complete.Sum(r => (long)r.Plan.PromptTokens) + cancelledAll.Sum(r => (long)r.Plan.PromptTokens);
        double sPrompt = after["emoe_prompt_tokens_total"] - before["emoe_prompt_tokens_total"];
        checks.Add(new("emoe_prompt_tokens_total = prompt tokens of the complete and cancelled requests", Inv($"{prompt}"), Inv($"{sPrompt}"), sPrompt == prompt));
        long generatedLow = complete.Sum(r => (long)r.CompletionTokens!.Value) + cancelledAll.Sum(r => (long)r.Chunks);
        long generatedHigh = complete.Sum(r => (long)r.CompletionTokens!.Value) + cancelledAll.Sum(r => (long)r.Plan.MaxTokens);
        double sGenerated = after["emoe_generation_tokens_total"] - before["emoe_generation_tokens_total"];
        checks.Add(new("emoe_generation_tokens_total: usage of the complete + between the chunks seen and max_tokens of the cancelled",
            Inv($"{generatedLow} .. {generatedHigh}"), Inv($"{sGenerated}"), sGenerated >= generatedLow && sGenerated <= generatedHigh));
        double sE2e = after["emoe_e2e_request_latency_seconds_count"] - before["emoe_e2e_request_latency_seconds_count"];
        double finished = new[] { "chat", "completions" }.Sum(e => after.Requests(e, "stop") - before.Requests(e, "stop") + after.Requests(e, "length") - before.Requests(e, "length"));
        checks.Add(new("emoe_e2e_request_latency_seconds_count = requests the server finished (stop + length)", Inv($"{finished}"), Inv($"{sE2e}"), sE2e == finished));
        return checks;
    }
}

/// <summary>The load test's numbers and files: results.json and results.md, with the targets.</summary>
internal sealed class HttpReport(string modelDirectory, string deviceName, int contextLength, HttpBenchOptions options, double calibrationE2eS, double lightRate, double rate,
    double durationS, List<HttpResult> results, List<InProcessResult> inProcess, List<HttpResult> lightHttp, List<MetricsCheck> checks, double? loadBefore,
    double? loadAfter)
{
    private List<HttpResult> Complete => [.. results.Where(r => r.Outcome == HttpOutcome.Complete)];
    private List<HttpResult> Streamed => [.. Complete.Where(r => r.Plan.Stream)];

    public int Lost => results.Count(r => r.Outcome == HttpOutcome.Lost);

    public bool MetricsAddUp => checks.All(c => c.Passed);

    /// <summary>No request lost and /metrics adds up (the exit code's verdict; the TTFT ratio is reported, not enforced).</summary>
    public bool Passed => Lost == 0 && MetricsAddUp;

    /// <summary>Output tokens the clients received: usage of the complete answers plus the chunks of the cancelled ones.</summary>
    private long OutputTokens => Complete.Sum(r => (long)r.CompletionTokens!.Value) + results.Where(r => r.Outcome == HttpOutcome.Cancelled).Sum(r => (long)r.Chunks);

    private LatencySummary? InProcessTtft => LatencySummary.Of(inProcess.Select(r => r.EngineTtftS));
    private LatencySummary? InProcessClientTtft => LatencySummary.Of(inProcess.Select(r => r.ClientTtftS));
    private LatencySummary? HttpTtft => LatencySummary.Of(lightHttp.Where(r => r.Outcome == HttpOutcome.Complete && r.TtftS is not null).Select(r => r.TtftS!.Value));

    private double? Ratio => HttpTtft is { } h && InProcessTtft is { P99: > 0 } p ? h.P99 / p.P99 : null;

    public string Json()
    {
        var result = new Dictionary<string, object?>
        {
            ["model"] = modelDirectory, ["device"] = deviceName, ["context_length"] = contextLength, ["processors"] = Environment.ProcessorCount,
            ["load_average_before"] = loadBefore, ["load_average_after"] = loadAfter,
            ["config"] = new Dictionary<string, object?>
            {
                ["requests"] = options.Requests, ["concurrency"] = options.Concurrency, ["rate_req_s"] = rate, ["rate_given"] = options.Rate is not null,
                ["max_tokens_cap"] = options.MaxTokens, ["max_batch"] = options.MaxBatch, ["max_waiting"] = options.MaxWaiting,
                ["cancel_fraction"] = options.CancelFraction, ["light_requests"] = options.LightRequests, ["light_rate_req_s"] = lightRate,
                ["seed"] = options.Seed, ["timeout_s"] = options.Timeout.TotalSeconds, ["arrivals"] = "poisson", ["host"] = "127.0.0.1",
            },
            ["calibration"] = new Dictionary<string, object?> { ["mean_e2e_ms"] = calibrationE2eS * 1000, ["capacity_req_s"] = 1 / calibrationE2eS },
            ["load"] = new Dictionary<string, object?>
            {
                ["requests"] = results.Count, ["duration_s"] = durationS, ["output_tokens"] = OutputTokens,
                ["throughput_tok_s"] = OutputTokens / durationS, ["request_throughput_req_s"] = Complete.Count / durationS,
                ["outcomes"] = new Dictionary<string, object?>
                {
                    ["complete"] = Complete.Count, ["cancelled"] = results.Count(r => r.Outcome == HttpOutcome.Cancelled),
                    ["cancel_planned"] = results.Count(r => r.Plan.CancelAfterChunks is not null),
                    ["clean_errors"] = results.Where(r => r.Outcome == HttpOutcome.CleanError).GroupBy(r => r.Status?.ToString(CultureInfo.InvariantCulture) ?? "stream")
                        .ToDictionary(g => g.Key, g => g.Count()),
                    ["lost"] = Lost,
                },
                ["streamed"] = Latencies(Streamed, tpot: true),
                ["not_streamed"] = Latencies([.. Complete.Where(r => !r.Plan.Stream)], tpot: false),
                ["send_lateness_max_ms"] = results.Max(r => r.SentS - r.ArrivalS) * 1000,
                ["per_request"] = results.Select(r => new Dictionary<string, object?>
                {
                    ["index"] = r.Plan.Index, ["task"] = r.Plan.Task, ["endpoint"] = r.Plan.Endpoint, ["stream"] = r.Plan.Stream,
                    ["cancel_after_chunks"] = r.Plan.CancelAfterChunks, ["max_tokens"] = r.Plan.MaxTokens, ["arrival_ms"] = r.ArrivalS * 1000,
                    ["sent_ms"] = r.SentS * 1000, ["outcome"] = r.Outcome.ToString().ToLowerInvariant(), ["status"] = r.Status, ["finish_reason"] = r.Finish,
                    ["detail"] = r.Detail, ["ttft_ms"] = r.TtftS * 1000, ["tpot_ms"] = r.TpotS * 1000, ["e2e_ms"] = r.E2eS * 1000,
                    ["prompt_tokens"] = r.PromptTokens ?? r.Plan.PromptTokens, ["completion_tokens"] = r.CompletionTokens, ["chunks"] = r.Chunks,
                }).ToList(),
            },
            ["metrics_checks"] = checks.Select(c => new Dictionary<string, object?>
            {
                ["check"] = c.Name, ["expected"] = c.Expected, ["actual"] = c.Actual, ["passed"] = c.Passed,
            }).ToList(),
            ["light_load"] = new Dictionary<string, object?>
            {
                ["requests"] = lightHttp.Count, ["rate_req_s"] = lightRate,
                ["in_process_engine_ttft"] = Summary(InProcessTtft), ["in_process_client_ttft"] = Summary(InProcessClientTtft), ["http_ttft"] = Summary(HttpTtft),
                ["http_complete"] = lightHttp.Count(r => r.Outcome == HttpOutcome.Complete),
                ["ttft_p99_ratio"] = Ratio,
            },
            ["targets"] = new Dictionary<string, object?>
            {
                ["zero_lost"] = Lost == 0, ["metrics_add_up"] = MetricsAddUp, ["ttft_p99_within_2x"] = Ratio <= TtftRatioTarget,
            },
        };
        return JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true });
    }

    private const double TtftRatioTarget = HttpBenchmark.TtftRatioTarget;

    private static Dictionary<string, object?>? Summary(LatencySummary? s) => s is null ? null : new Dictionary<string, object?>
    {
        ["mean_ms"] = s.Mean * 1000, ["p50_ms"] = s.P50 * 1000, ["p90_ms"] = s.P90 * 1000, ["p99_ms"] = s.P99 * 1000,
    };

    private static Dictionary<string, object?> Latencies(List<HttpResult> r, bool tpot) => new()
    {
        ["requests"] = r.Count,
        ["ttft"] = tpot ? Summary(LatencySummary.Of(r.Select(x => x.TtftS!.Value))) : null,
        ["tpot"] = tpot ? Summary(LatencySummary.Of(r.Where(x => x.TpotS is not null).Select(x => x.TpotS!.Value))) : null,
        ["e2e"] = Summary(LatencySummary.Of(r.Select(x => x.E2eS))),
    };

    public string Markdown()
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        string Ms(double? seconds, string format = "0.0") => seconds is double s ? (s * 1000).ToString(format, inv) : "-";
        string P(LatencySummary? s, string format = "0.0") => s is null ? "- / -" : $"{Ms(s.P50, format)} / {Ms(s.P99, format)}";
        sb.AppendLine("# emoe bench http");
        sb.AppendLine();
        sb.AppendLine(inv, $"Model {modelDirectory} on {deviceName}, served in process by eMoE.Server (Kestrel) on 127.0.0.1 (a free port), max batch {options.MaxBatch}, max waiting {options.MaxWaiting}. " +
            $"{options.Requests} requests from a pool of {options.Concurrency} clients (HttpClient, raw SSE parsing), open-loop Poisson arrivals at {rate:0.###} req/s (seed {options.Seed}; " +
            $"{(options.Rate is null ? string.Create(inv, $"{HttpBenchmark.LoadMultiple} x the calibrated capacity") : "given")}); a request due while every client is busy waits for one. " +
            $"Evaluation prompts, tasks interleaved, each with its task's max_tokens{(options.MaxTokens is int cap ? string.Create(inv, $" capped at {cap}") : "")}, greedy; " +
            $"half chat and half text completions, half streamed (stream_options.include_usage), {options.CancelFraction:P0} of all requests cancelled mid-stream (drawn among the streamed; the client closes the connection after chunk k, k uniform in 1 .. max_tokens / 2). Run bounded by {options.Timeout.TotalSeconds:0} s.");
        sb.AppendLine();
        // The load after the run includes the run's own work (clients, server, engine): only the load before says whether others shared the machine.
        bool shared = loadBefore > Environment.ProcessorCount / 2.0;
        sb.AppendLine(inv, $"Machine: {Environment.ProcessorCount} processors, 1-minute load average {Load(loadBefore)} before and {Load(loadAfter)} after. " +
            $"{(shared ? "The machine was shared: other work kept its processors busy when the run began, so the latencies are not clean. " : "")}" +
            $"The clients, the server and the engine share the same processors.");
        sb.AppendLine();
        sb.AppendLine(inv, $"Calibration: the first {HttpBenchmark.CalibrationPerTask} prompts of each task one after another in process, unloaded: mean e2e {calibrationE2eS * 1000:0.0} ms, capacity c = {1 / calibrationE2eS:0.###} req/s.");
        sb.AppendLine();
        sb.AppendLine("## Load");
        sb.AppendLine();
        int cancelled = results.Count(r => r.Outcome == HttpOutcome.Cancelled), planned = results.Count(r => r.Plan.CancelAfterChunks is not null);
        var errors = results.Where(r => r.Outcome == HttpOutcome.CleanError).GroupBy(r => r.Status?.ToString(inv) ?? "stream").Select(g => $"{g.Count()} x {g.Key}").ToList();
        sb.AppendLine("| requests | complete | cancelled (planned) | clean errors | lost | duration s | output tok/s | complete req/s |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        sb.AppendLine(inv, $"| {results.Count} | {Complete.Count} | {cancelled} ({planned}) | {(errors.Count == 0 ? "0" : string.Join(", ", errors))} | {Lost} | {durationS:0.0} | " +
            $"{OutputTokens / durationS:0.0} | {Complete.Count / durationS:0.00} |");
        sb.AppendLine();
        sb.AppendLine("Output tokens: usage.completion_tokens of the complete answers plus the chunks the cancelled ones received; duration from the first arrival to the last answer. " +
            "A planned cancellation whose answer ended before its chunk k counts as complete.");
        sb.AppendLine();
        var notStreamed = Complete.Where(r => !r.Plan.Stream).ToList();
        sb.AppendLine("| complete requests | count | TTFT p50 / p99 ms | TPOT p50 / p99 ms | e2e p50 / p99 ms |");
        sb.AppendLine("|---|---|---|---|---|");
        sb.AppendLine(inv, $"| streamed | {Streamed.Count} | {P(LatencySummary.Of(Streamed.Select(r => r.TtftS!.Value)))} | {P(LatencySummary.Of(Streamed.Where(r => r.TpotS is not null).Select(r => r.TpotS!.Value)), "0.00")} | " +
            $"{P(LatencySummary.Of(Streamed.Select(r => r.E2eS)))} |");
        sb.AppendLine(inv, $"| not streamed | {notStreamed.Count} | (= e2e) | - | {P(LatencySummary.Of(notStreamed.Select(r => r.E2eS)))} |");
        sb.AppendLine();
        sb.AppendLine("Client clock, from sending the request: TTFT to the first chunk with content, TPOT (e2e - TTFT) / (completion_tokens - 1), e2e to [DONE] or the whole body. " +
            $"Requests were sent at most {results.Max(r => r.SentS - r.ArrivalS) * 1000:0} ms after their arrival times (waiting for a free client counts there, not in TTFT). " +
            "results.json holds every request (per_request).");
        foreach (var g in results.Where(r => r.Outcome == HttpOutcome.CleanError).GroupBy(r => (r.Status, r.Detail)).OrderBy(g => g.Key.Status))
        {
            sb.AppendLine(inv, $"- clean errors: {g.Count()} x {g.Key.Status?.ToString(inv) ?? "error event"} {g.Key.Detail} " +
                $"(request: endpoint, prompt + max_tokens of a {contextLength}-token context: {string.Join(", ", g.Select(r => string.Create(inv, $"{r.Plan.Index}: {r.Plan.Endpoint}, {r.Plan.PromptTokens} + {r.Plan.MaxTokens}")))})");
        }
        foreach (var lost in results.Where(r => r.Outcome == HttpOutcome.Lost).Take(10))
            sb.AppendLine(inv, $"- lost: request {lost.Plan.Index} ({lost.Plan.Endpoint}, {(lost.Plan.Stream ? "streamed" : "whole")}): {lost.Detail}");
        sb.AppendLine();
        sb.AppendLine("## /metrics");
        sb.AppendLine();
        sb.AppendLine("The differences of two scrapes around the load phase, against what the clients saw; after the last answer, /metrics is polled until the slots are free (bounded).");
        sb.AppendLine();
        sb.AppendLine("| check | expected | actual | passed |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var c in checks) sb.AppendLine(inv, $"| {c.Name} | {c.Expected} | {c.Actual} | {(c.Passed ? "yes" : "**NO**")} |");
        sb.AppendLine();
        sb.AppendLine("## Light load: in process vs HTTP");
        sb.AppendLine();
        sb.AppendLine(inv, $"{lightHttp.Count} requests (the first prompts, text completions, streamed, none cancelled) at {lightRate:0.###} req/s " +
            $"({(options.LightRate is null ? string.Create(inv, $"{HttpBenchmark.LightMultiple}c, bench serve's lowest default rate") : "given")}), the same Poisson arrival times for both, " +
            $"on the same loaded model: first in process through MoeModel.GenerateIdsAsync (as bench serve), then over HTTP.");
        sb.AppendLine();
        sb.AppendLine("| path | TTFT p50 / p99 ms |");
        sb.AppendLine("|---|---|");
        sb.AppendLine(inv, $"| in process, engine clock (bench serve's TTFT) | {P(InProcessTtft)} |");
        sb.AppendLine(inv, $"| in process, consumer clock (call to first id) | {P(InProcessClientTtft)} |");
        sb.AppendLine(inv, $"| HTTP, client clock (request sent to first content chunk) | {P(HttpTtft)} |");
        sb.AppendLine();
        sb.AppendLine("## Targets");
        sb.AppendLine();
        sb.AppendLine(inv, $"- 0 lost requests: {Lost} lost: **{(Lost == 0 ? "met" : "not met")}**.");
        sb.AppendLine(inv, $"- /metrics adds up and the slots are free at the end: {checks.Count(c => c.Passed)} of {checks.Count} checks passed: **{(MetricsAddUp ? "met" : "not met")}**.");
        sb.AppendLine(Ratio is double ratio
            ? string.Create(inv, $"- p99 TTFT under light load within {TtftRatioTarget}x of the in-process engine's: HTTP {Ms(HttpTtft!.P99)} ms / in process {Ms(InProcessTtft!.P99)} ms = {ratio:0.00}x: **{(ratio <= TtftRatioTarget ? "met" : "not met")}**.")
            : "- p99 TTFT under light load: not evaluated (no complete light-load request).");
        return sb.ToString();
    }

    private static string Load(double? load) => load is double l ? l.ToString("0.0", CultureInfo.InvariantCulture) : "n/a";
}
