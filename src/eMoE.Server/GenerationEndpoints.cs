using System.Diagnostics;
using System.Text;
using System.Text.Json;
using eMoE.Inference;
using eMoE.Model;

namespace eMoE.Server;

/// <summary>
/// <c>POST /v1/chat/completions</c> and <c>POST /v1/completions</c>: admission (429 beyond the
/// queue), the body, validation, the prompt (chat template, tokenizer), the context check, then
/// the generation, answered whole or streamed. The request's cancellation is the client's
/// connection (<see cref="HttpContext.RequestAborted"/>) or the shutdown deadline: either ends the
/// engine's sequence within one step.
/// </summary>
internal sealed class GenerationEndpoints(ModelHost host, AdmissionQueue queue, ServerMetrics metrics, long maxBodyBytes, ILogger logger)
{
    public const string Chat = "chat", Completions = "completions";

    /// <summary>A validated request, ready to run.</summary>
    private sealed record Prepared(Generation Generation, GenerationRequest Request, ResponseShape Shape, string? Echo, bool IsChat);

    public Task ChatAsync(HttpContext context) => HandleAsync(context, Chat);

    public Task CompletionsAsync(HttpContext context) => HandleAsync(context, Completions);

    private async Task HandleAsync(HttpContext context, string endpoint)
    {
        long arrived = Stopwatch.GetTimestamp();
        string outcome = ServerMetrics.Outcomes.Error;
        try
        {
            var model = host.RequireReady();
            using var lease = queue.Enter();
            using var body = await RequestBody.ReadObjectAsync(context.Request, maxBodyBytes, context.RequestAborted).ConfigureAwait(false);
            var prepared = endpoint == Chat ? PrepareChat(body.RootElement, model) : PrepareCompletion(body.RootElement, model);
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, host.Aborted);
            outcome = await RunAsync(context, prepared, arrived, cancel.Token).ConfigureAwait(false);
        }
        catch (ApiException e) when (e.Status == 429)
        {
            outcome = ServerMetrics.Outcomes.Rejected;
            throw;
        }
        catch (Exception e) when (context.RequestAborted.IsCancellationRequested && e is OperationCanceledException or IOException)
        {
            outcome = ServerMetrics.Outcomes.Cancelled;
        }
        finally
        {
            metrics.Finished(endpoint, outcome);
        }
    }

    private Prepared PrepareChat(JsonElement body, MoeModel model)
    {
        var request = ChatRequest.Read(body, host.ServedName, host.Defaults);
        ChatPrompt prompt;
        try
        {
            prompt = ChatPrompt.Create(model.RequireTokenizer(), host.Template, request.Messages);
        }
        catch (ChatTemplateException e)
        {
            throw ApiException.BadRequest($"The chat template refused the messages: {e.Message}", "messages", "invalid_messages");
        }
        var options = request.Generation.ToOptions(prompt.Ids.Count, model.ContextLength, null, "messages");
        var shape = new ChatShape("chatcmpl-" + Guid.NewGuid().ToString("N"), DateTimeOffset.UtcNow.ToUnixTimeSeconds(), host.ServedName);
        return new Prepared(model.Generate(prompt.Ids, options), request.Generation, shape, null, IsChat: true);
    }

    private Prepared PrepareCompletion(JsonElement body, MoeModel model)
    {
        var request = CompletionRequest.Read(body, host.ServedName, host.Defaults, model.Config.VocabSize);
        var tokenizer = model.RequireTokenizer();
        var ids = request.Ids ?? tokenizer.Encode(request.Text!, addSpecialTokens: true);
        if (ids.Count == 0) throw ApiException.BadRequest("'prompt' has no tokens", "prompt", "invalid_value");
        // OpenAI's default for completions: 16 tokens.
        var options = request.Generation.ToOptions(ids.Count, model.ContextLength, 16, "prompt");
        string? echo = request.Echo ? request.Text ?? tokenizer.Decode([.. ids]) : null;
        var shape = new TextShape("cmpl-" + Guid.NewGuid().ToString("N"), DateTimeOffset.UtcNow.ToUnixTimeSeconds(), host.ServedName);
        return new Prepared(model.Generate(ids, options), request.Generation, shape, echo, IsChat: false);
    }

    private static string Finish(FinishReason reason) => reason is FinishReason.MaxTokens or FinishReason.ContextFull ? "length" : "stop";

    /// <summary>Generates and answers; returns the outcome for the metrics.</summary>
    private async Task<string> RunAsync(HttpContext context, Prepared p, long arrived, CancellationToken cancellationToken)
    {
        var generation = p.Generation;
        var request = p.Request;
        var timing = new Timing(arrived);
        var sse = request.Stream ? new SseWriter(context.Response) : null;
        var text = request.Stream ? null : new StringBuilder(p.Echo);
        bool observed = false; // Served counts each request once, however it ends
        try
        {
            if (sse is not null)
            {
                await sse.StartAsync(cancellationToken).ConfigureAwait(false);
                if (p.IsChat || p.Echo is not null)
                    await sse.WriteAsync(json => p.Shape.WriteChunk(json, p.IsChat ? p.Echo ?? "" : p.Echo, role: p.IsChat, null, request.IncludeUsage), cancellationToken).ConfigureAwait(false);
            }
            await foreach (var token in generation.WithCancellation(cancellationToken).ConfigureAwait(false))
            {
                timing.Token();
                if (token.Text.Length == 0) continue;
                if (text is not null) text.Append(token.Text);
                else await sse!.WriteAsync(json => p.Shape.WriteChunk(json, token.Text, false, null, request.IncludeUsage), cancellationToken).ConfigureAwait(false);
            }
            if (cancellationToken.IsCancellationRequested)
            {
                observed = true;
                Observe(p, timing, finished: false);
                if (context.RequestAborted.IsCancellationRequested) return ServerMetrics.Outcomes.Cancelled;
                // The shutdown deadline passed: a clean error instead of a cut-off answer.
                var error = new ApiException(503, "The server shut down before the request finished", code: "shutdown");
                if (sse is null) throw error;
                await sse.WriteAsync(json => WriteErrorEvent(json, error), CancellationToken.None).ConfigureAwait(false);
                await sse.DoneAsync(CancellationToken.None).ConfigureAwait(false);
                return ServerMetrics.Outcomes.Error;
            }
            string tail = generation.FlushText();
            string finish = Finish(generation.Stats.FinishReason);
            var usage = new Usage(generation.PromptIds.Count, generation.Stats.GeneratedTokens);
            observed = true;
            Observe(p, timing, finished: true);
            if (sse is null)
            {
                text!.Append(tail);
                context.Response.StatusCode = 200;
                context.Response.ContentType = "application/json";
                using var buffer = new MemoryStream();
                using (var json = new Utf8JsonWriter(buffer, Json.Writer)) p.Shape.WriteResponse(json, text.ToString(), finish, usage);
                await context.Response.Body.WriteAsync(buffer.GetBuffer().AsMemory(0, (int)buffer.Length), context.RequestAborted).ConfigureAwait(false);
            }
            else
            {
                if (tail.Length > 0)
                    await sse.WriteAsync(json => p.Shape.WriteChunk(json, tail, false, null, request.IncludeUsage), cancellationToken).ConfigureAwait(false);
                await sse.WriteAsync(json => p.Shape.WriteChunk(json, p.IsChat ? null : "", false, finish, request.IncludeUsage), cancellationToken).ConfigureAwait(false);
                if (request.IncludeUsage) await sse.WriteAsync(json => p.Shape.WriteUsageChunk(json, usage), cancellationToken).ConfigureAwait(false);
                await sse.DoneAsync(cancellationToken).ConfigureAwait(false);
            }
            return finish;
        }
        catch (Exception e) when (!observed && context.RequestAborted.IsCancellationRequested && e is OperationCanceledException or IOException)
        {
            // The client went away while a token was awaited or written (which of the two comes first is
            // a race): what the request used counts as when the generation ends on the cancellation
            // first (above), and the caller records the outcome as cancelled.
            Observe(p, timing, finished: false);
            throw;
        }
        catch (Exception e) when (sse is not null && context.Response.HasStarted && !context.RequestAborted.IsCancellationRequested
                                  && e is not OperationCanceledException)
        {
            // Mid-stream failure (the engine stopped or failed): an error event, then the end.
            logger.LogError(e, "streaming {Endpoint} failed", p.IsChat ? Chat : Completions);
            var error = ErrorHandling.ToApiException(e);
            await sse.WriteAsync(json => WriteErrorEvent(json, error), CancellationToken.None).ConfigureAwait(false);
            await sse.DoneAsync(CancellationToken.None).ConfigureAwait(false);
            return ServerMetrics.Outcomes.Error;
        }
    }

    private static void WriteErrorEvent(Utf8JsonWriter json, ApiException error)
    {
        json.WriteStartObject();
        json.WritePropertyName("error");
        ApiError.WriteObject(json, error.Message, error.Type, error.Param, error.Code);
        json.WriteEndObject();
    }

    private void Observe(Prepared p, Timing timing, bool finished)
    {
        var stats = p.Generation.Stats;
        metrics.Served(p.Generation.PromptIds.Count, stats.GeneratedTokens, timing.TimeToFirstToken, timing.TimePerOutputToken, finished ? timing.EndToEnd : null);
        if (finished && p.Request.Slo is { } slo && timing.TimeToFirstToken is { } ttft)
            metrics.Slo(p.Request.Task, slo.Met(ttft, timing.TimePerOutputToken));
    }

    /// <summary>When the request arrived and its tokens came out (the server's view, HTTP parsing and queueing included).</summary>
    private sealed class Timing(long arrived)
    {
        private long _first, _last;
        private int _tokens;

        public void Token()
        {
            _last = Stopwatch.GetTimestamp();
            if (_tokens++ == 0) _first = _last;
        }

        public TimeSpan? TimeToFirstToken => _tokens == 0 ? null : Stopwatch.GetElapsedTime(arrived, _first);
        public TimeSpan? TimePerOutputToken => _tokens < 2 ? null : Stopwatch.GetElapsedTime(_first, _last) / (_tokens - 1);
        public TimeSpan EndToEnd => Stopwatch.GetElapsedTime(arrived);
    }
}
