using System.Text;
using System.Text.Json;
using eMoE.Inference;
using eMoE.Model;
using NUnit.Framework;

namespace eMoE.Tests.Server;

/// <summary>
/// The HTTP server with a raw HttpClient: greedy answers equal <see cref="MoeModel.Generate(string, GenerationOptions?)"/>,
/// streamed or not; finish reasons; every bad request of the list answered with its status
/// and an OpenAI-shaped body naming the field; a client that disconnects frees its slot; /metrics adds up.
/// </summary>
[NonParallelizable]
public sealed class ServerTests
{
    private TestServer _server = null!;

    [OneTimeSetUp]
    public async Task Start() => _server = await TestServer.StartAsync();

    [OneTimeTearDown]
    public async Task Stop() => await _server.DisposeAsync();

    private const string Messages = """[{"role":"system","content":"Be brief."},{"role":"user","content":"And God said"}]""";

    /// <summary>What the library generates for a prompt: text, tokens, finish.</summary>
    internal static async Task<(string Text, int Tokens, FinishReason Finish)> ReferenceAsync(MoeModel model, string prompt, bool addSpecialTokens, int maxTokens,
        IReadOnlyList<string>? stop = null)
    {
        var generation = model.Generate(prompt, new GenerationOptions { MaxTokens = maxTokens, AddSpecialTokens = addSpecialTokens, StopSequences = stop });
        var text = new StringBuilder();
        await foreach (var token in generation) text.Append(token.Text);
        text.Append(generation.FlushText());
        return (text.ToString(), generation.Stats.GeneratedTokens, generation.Stats.FinishReason);
    }

    private ChatPrompt ChatPromptOf(params ChatMessage[] messages) =>
        ChatPrompt.Create(_server.Model.RequireTokenizer(), ChatTemplate.ForModel(RepoPaths.ShippedModel), messages);

    [Test]
    public async Task HealthIsOkAndModelsListsTheServedModel()
    {
        using var health = await _server.Http.GetAsync("/health");
        Assert.That((int)health.StatusCode, Is.EqualTo(200));
        Assert.That(await health.Content.ReadAsStringAsync(), Is.EqualTo("""{"status":"ok"}"""));
        var models = JsonDocument.Parse(await _server.Http.GetStringAsync("/v1/models")).RootElement;
        Assert.That(models.GetProperty("object").GetString(), Is.EqualTo("list"));
        Assert.That(models.GetProperty("data")[0].GetProperty("id").GetString(), Is.EqualTo(TestServer.ModelName));
        Assert.That(models.GetProperty("data")[0].GetProperty("object").GetString(), Is.EqualTo("model"));
        using var missing = await _server.Http.GetAsync("/v1/models/gpt-4");
        Assert.That((int)missing.StatusCode, Is.EqualTo(404));
    }

    [Test]
    public async Task GreedyChatEqualsGenerateOfTheRenderedPrompt()
    {
        var prompt = ChatPromptOf(new ChatMessage("system", "Be brief."), new ChatMessage("user", "And God said"));
        Assert.That(prompt.Text, Is.EqualTo("<|system|>\nBe brief.\n<|user|>\nAnd God said\n<|assistant|>\n"), "the plain fallback");
        Assert.That(prompt.AddedSpecialTokens, "the fallback has no BOS: the tokenizer adds it");
        var expected = await ReferenceAsync(_server.Model, prompt.Text, prompt.AddedSpecialTokens, 12);

        var answer = await _server.PostJsonAsync("/v1/chat/completions", $$"""{"model":"tiny-mixtral","messages":{{Messages}},"max_tokens":12,"temperature":0}""");
        Assert.That(answer.GetProperty("object").GetString(), Is.EqualTo("chat.completion"));
        var choice = answer.GetProperty("choices")[0];
        Assert.That(choice.GetProperty("message").GetProperty("role").GetString(), Is.EqualTo("assistant"));
        Assert.That(choice.GetProperty("message").GetProperty("content").GetString(), Is.EqualTo(expected.Text));
        Assert.That(choice.GetProperty("finish_reason").GetString(), Is.EqualTo(expected.Finish == FinishReason.MaxTokens ? "length" : "stop"));
        var usage = answer.GetProperty("usage");
        Assert.That(usage.GetProperty("prompt_tokens").GetInt32(), Is.EqualTo(prompt.Ids.Count));
        Assert.That(usage.GetProperty("completion_tokens").GetInt32(), Is.EqualTo(expected.Tokens));
        Assert.That(usage.GetProperty("total_tokens").GetInt32(), Is.EqualTo(prompt.Ids.Count + expected.Tokens));

        using var response = await _server.PostAsync("/v1/chat/completions",
            $$$"""{"messages":{{{Messages}}},"max_completion_tokens":12,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}""");
        Assert.That(response.Content.Headers.ContentType!.MediaType, Is.EqualTo("text/event-stream"));
        var (events, done) = await TestServer.ReadEventsAsync(response);
        Assert.That(done, "ends with [DONE]");
        Assert.That(events[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString(), Is.EqualTo("assistant"));
        var streamed = new StringBuilder();
        foreach (var e in events.Where(e => e.GetProperty("choices").GetArrayLength() > 0))
        {
            Assert.That(e.GetProperty("object").GetString(), Is.EqualTo("chat.completion.chunk"));
            if (e.GetProperty("choices")[0].GetProperty("delta").TryGetProperty("content", out var c)) streamed.Append(c.GetString());
        }
        Assert.That(streamed.ToString(), Is.EqualTo(expected.Text));
        var finals = events.Where(e => e.GetProperty("choices").GetArrayLength() > 0 && e.GetProperty("choices")[0].GetProperty("finish_reason").ValueKind == JsonValueKind.String).ToList();
        Assert.That(finals, Has.Count.EqualTo(1), "one chunk carries finish_reason");
        var last = events[^1];
        Assert.That(last.GetProperty("choices").GetArrayLength(), Is.Zero, "the usage chunk has empty choices");
        Assert.That(last.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), Is.EqualTo(expected.Tokens));
        Assert.That(events[0].GetProperty("usage").ValueKind, Is.EqualTo(JsonValueKind.Null), "the other chunks carry usage: null");
    }

    [Test]
    public async Task GreedyCompletionsEqualGenerateForTextTokenIdsAndStreams()
    {
        const string prompt = "And God said";
        var expected = await ReferenceAsync(_server.Model, prompt, addSpecialTokens: true, 10);
        var answer = await _server.PostJsonAsync("/v1/completions", """{"prompt":"And God said","max_tokens":10,"temperature":0}""");
        Assert.That(answer.GetProperty("object").GetString(), Is.EqualTo("text_completion"));
        Assert.That(answer.GetProperty("choices")[0].GetProperty("text").GetString(), Is.EqualTo(expected.Text));
        Assert.That(answer.GetProperty("choices")[0].GetProperty("finish_reason").GetString(), Is.EqualTo("length"));

        var ids = _server.Model.RequireTokenizer().Encode(prompt, addSpecialTokens: true);
        var byIds = await _server.PostJsonAsync("/v1/completions", $$"""{"prompt":[{{string.Join(",", ids)}}],"max_tokens":10,"temperature":0}""");
        Assert.That(byIds.GetProperty("choices")[0].GetProperty("text").GetString(), Is.EqualTo(expected.Text), "token ids are used as they are");
        Assert.That(byIds.GetProperty("usage").GetProperty("prompt_tokens").GetInt32(), Is.EqualTo(ids.Count));
        var listOfOne = await _server.PostJsonAsync("/v1/completions", """{"prompt":["And God said"],"max_tokens":10,"temperature":0}""");
        Assert.That(listOfOne.GetProperty("choices")[0].GetProperty("text").GetString(), Is.EqualTo(expected.Text));

        using var response = await _server.PostAsync("/v1/completions", """{"prompt":"And God said","max_tokens":10,"temperature":0,"stream":true}""");
        var (events, done) = await TestServer.ReadEventsAsync(response);
        Assert.That(done);
        Assert.That(string.Concat(events.Select(e => e.GetProperty("choices")[0].GetProperty("text").GetString())), Is.EqualTo(expected.Text));
        Assert.That(events[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString(), Is.EqualTo("length"));
        Assert.That(events.All(e => !e.TryGetProperty("usage", out _)), "no usage without include_usage");
    }

    [Test]
    public async Task StopSequencesEndWithStopAndEchoRepeatsThePrompt()
    {
        var full = await ReferenceAsync(_server.Model, "And God said", true, 40);
        int newline = full.Text.IndexOf('\n', StringComparison.Ordinal);
        Assert.That(newline, Is.Positive, "the reference continuation has a line break");
        var stopped = await _server.PostJsonAsync("/v1/completions", """{"prompt":"And God said","max_tokens":40,"temperature":0,"stop":["\n"]}""");
        Assert.That(stopped.GetProperty("choices")[0].GetProperty("text").GetString(), Is.EqualTo(full.Text[..newline]));
        Assert.That(stopped.GetProperty("choices")[0].GetProperty("finish_reason").GetString(), Is.EqualTo("stop"));
        var echoed = await _server.PostJsonAsync("/v1/completions", """{"prompt":"And God said","max_tokens":5,"temperature":0,"echo":true}""");
        Assert.That(echoed.GetProperty("choices")[0].GetProperty("text").GetString(), Does.StartWith("And God said"));
        var sampled = await _server.PostJsonAsync("/v1/chat/completions",
            """{"messages":[{"role":"user","content":[{"type":"text","text":"And God"},{"type":"text","text":" said"}]}],"max_tokens":4,"temperature":0.8,"top_p":0.9,"top_k":20,"seed":7,"task":"bible","slo":{"ttft_ms":5000,"tpot_ms":1000},"user":"u","frequency_penalty":0,"some_new_field":{"x":1}}""");
        Assert.That(sampled.GetProperty("choices")[0].GetProperty("finish_reason").GetString(), Is.AnyOf("stop", "length"));
        var again = await _server.PostJsonAsync("/v1/chat/completions",
            """{"messages":[{"role":"user","content":"And God said"}],"max_tokens":4,"temperature":0.8,"top_p":0.9,"top_k":20,"seed":7}""");
        Assert.That(again.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(),
            Is.EqualTo(sampled.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()), "text parts join; the same seed samples the same");
    }

    /// <summary>The bad requests: the status, and the field the error names (null: none).</summary>
    private static IEnumerable<TestCaseData> BadRequests()
    {
        const string chat = "/v1/chat/completions", completions = "/v1/completions";
        const string user = """[{"role":"user","content":"hi"}]""";
        yield return new TestCaseData(chat, "{\"messages\": [", 400, null, "not valid JSON").SetName("malformed JSON");
        yield return new TestCaseData(chat, "[1,2]", 400, null, "JSON object").SetName("body not an object");
        yield return new TestCaseData(chat, "", 400, null, "empty").SetName("empty body");
        yield return new TestCaseData(chat, """{"messages":"hi"}""", 400, "messages", "array").SetName("messages of the wrong type");
        yield return new TestCaseData(chat, """{"model":"tiny-mixtral"}""", 400, "messages", "required").SetName("missing messages");
        yield return new TestCaseData(chat, """{"messages":[]}""", 400, "messages", "empty").SetName("empty messages");
        yield return new TestCaseData(chat, """{"messages":[{"role":"wizard","content":"hi"}]}""", 400, "messages[0].role", "wizard").SetName("unknown role");
        yield return new TestCaseData(chat, """{"messages":[{"content":"hi"}]}""", 400, "messages[0].role", "required").SetName("missing role");
        yield return new TestCaseData(chat, """{"messages":[{"role":"user","content":42}]}""", 400, "messages[0].content", "string").SetName("content of the wrong type");
        yield return new TestCaseData(chat, """{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", 400,
            "messages[0].content[0].type", "text").SetName("image content");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"max_tokens":-5}""", 400, "max_tokens", "-5").SetName("negative max_tokens");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"max_tokens":0}""", 400, "max_tokens", "at least 1, got 0").SetName("zero max_tokens");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"max_tokens":1e30}""", 400, "max_tokens", "between").SetName("absurd max_tokens");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"max_tokens":2.5}""", 400, "max_tokens", "integer").SetName("fractional max_tokens");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"max_tokens":"10"}""", 400, "max_tokens", "integer").SetName("max_tokens of the wrong type");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"max_completion_tokens":-1}""", 400, "max_completion_tokens", "-1").SetName("negative max_completion_tokens");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"max_tokens":250}""", 400, "max_tokens", "256").SetName("prompt plus max_tokens beyond the context");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"temperature":-1}""", 400, "temperature", "between 0 and 2").SetName("negative temperature");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"temperature":9}""", 400, "temperature", "between 0 and 2").SetName("temperature above 2");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"temperature":"hot"}""", 400, "temperature", "number").SetName("temperature of the wrong type");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"top_p":0}""", 400, "top_p", "(0, 1]").SetName("top_p zero");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"top_k":-2}""", 400, "top_k", "-2").SetName("top_k below -1");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"n":2}""", 400, "n", "must be 1").SetName("n of 2");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"stream":"yes"}""", 400, "stream", "boolean").SetName("stream of the wrong type");
        yield return new TestCaseData(chat, $$$"""{"messages":{{{user}}},"stream_options":{"include_usage":true}}""", 400, "stream_options", "stream").SetName("stream_options without stream");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"stop":[1]}""", 400, "stop[0]", "string").SetName("stop of the wrong type");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"stop":""}""", 400, "stop", "empty").SetName("empty stop");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"seed":"x"}""", 400, "seed", "integer").SetName("seed of the wrong type");
        yield return new TestCaseData(chat, $$$"""{"messages":{{{user}}},"slo":{"ttft_ms":-1}}""", 400, "slo.ttft_ms", "positive").SetName("negative SLO");
        yield return new TestCaseData(chat, $$"""{"messages":{{user}},"task":7}""", 400, "task", "string").SetName("task of the wrong type");
        yield return new TestCaseData(chat, $$"""{"model":"gpt-4","messages":{{user}}}""", 404, "model", "gpt-4").SetName("unknown model");
        yield return new TestCaseData(completions, """{"max_tokens":5}""", 400, "prompt", "required").SetName("missing prompt");
        yield return new TestCaseData(completions, """{"prompt":["a","b"]}""", 400, "prompt", "one prompt per request").SetName("several prompts");
        yield return new TestCaseData(completions, """{"prompt":[1,99999]}""", 400, "prompt[1]", "token id").SetName("token id outside the vocabulary");
        yield return new TestCaseData(completions, """{"prompt":{"text":"a"}}""", 400, "prompt", "string").SetName("prompt of the wrong type");
        yield return new TestCaseData(completions, """{"prompt":"a","max_tokens":300}""", 400, "max_tokens", "256").SetName("completion beyond the context");
    }

    [TestCaseSource(nameof(BadRequests))]
    public async Task BadRequestsGetTheirStatusAndAnOpenAiError(string path, string body, int status, string? param, string message)
    {
        using var response = await _server.PostAsync(path, body);
        await AssertOpenAiError(response, status, param, message);
    }

    private static async Task<JsonElement> AssertOpenAiError(HttpResponseMessage response, int status, string? param, string message)
    {
        string text = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(status), text);
        Assert.That(response.Content.Headers.ContentType?.MediaType, Is.EqualTo("application/json"));
        var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
        Assert.That(error.GetProperty("message").GetString(), Does.Contain(message));
        Assert.That(error.GetProperty("type").ValueKind, Is.EqualTo(JsonValueKind.String));
        Assert.That(error.TryGetProperty("code", out _), "code is present");
        if (param is null) Assert.That(error.GetProperty("param").ValueKind, Is.EqualTo(JsonValueKind.Null));
        else Assert.That(error.GetProperty("param").GetString(), Is.EqualTo(param));
        return error;
    }

    [Test]
    public async Task ContextErrorsNameBothNumbers()
    {
        var ids = ChatPromptOf(new ChatMessage("user", "hi")).Ids.Count;
        using var response = await _server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}],"max_tokens":250}""");
        var error = await AssertOpenAiError(response, 400, "max_tokens", "context length is 256");
        Assert.That(error.GetProperty("message").GetString(), Does.Contain($"{ids} in the prompt").And.Contain("250 for the completion"));
        Assert.That(error.GetProperty("code").GetString(), Is.EqualTo("context_length_exceeded"));
    }

    [Test]
    public async Task InvalidUtf8OversizedBodiesWrongMethodsAndUnknownPathsAreOpenAiShaped()
    {
        var bytes = new ByteArrayContent([.. "{\"prompt\":\""u8, 0xff, 0xfe, .. "\"}"u8]);
        bytes.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        using (var response = await _server.Http.PostAsync("/v1/completions", bytes)) await AssertOpenAiError(response, 400, null, "UTF-8");

        static string PromptOfLength(long length) => "{\"prompt\":\"" + new string('a', (int)length) + "\"}";
        long limit = TestServer.DefaultOptions.MaxRequestBodyBytes;
        using (var response = await _server.PostAsync("/v1/completions", PromptOfLength(2 * limit))) await AssertOpenAiError(response, 413, null, "limit");
        // Without a Content-Length (chunked), Kestrel's limit stops the read. The body is only a little
        // over the limit: the server answers as soon as the limit is crossed and closes the connection,
        // and a client still writing a whole limit's worth more would see a broken pipe instead of the answer.
        var chunked = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(PromptOfLength(limit + 1024))));
        chunked.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json");
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = chunked };
        request.Headers.TransferEncodingChunked = true;
        using (var response = await _server.Http.SendAsync(request)) await AssertOpenAiError(response, 413, null, "too large");

        using (var response = await _server.Http.GetAsync("/v1/chat/completions"))
        {
            await AssertOpenAiError(response, 405, null, "not allowed");
            Assert.That(response.Content.Headers.Allow, Does.Contain("POST"));
        }
        using (var response = await _server.Http.DeleteAsync("/v1/models")) await AssertOpenAiError(response, 405, null, "not allowed");
        using (var response = await _server.Http.GetAsync("/v2/everything")) await AssertOpenAiError(response, 404, null, "Not found");
    }

    [Test]
    public async Task BadRequestsLeaveTheServerHealthy()
    {
        foreach (var data in BadRequests())
        {
            using var response = await _server.PostAsync((string)data.Arguments[0]!, (string)data.Arguments[1]!);
            Assert.That((int)response.StatusCode, Is.EqualTo((int)data.Arguments[2]!));
        }
        await _server.WaitIdleAsync();
        using var health = await _server.Http.GetAsync("/health");
        Assert.That((int)health.StatusCode, Is.EqualTo(200));
        var answer = await _server.PostJsonAsync("/v1/completions", """{"prompt":"And God said","max_tokens":3,"temperature":0}""");
        Assert.That(answer.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), Is.EqualTo(3));
    }

    [Test]
    public async Task AClientThatDisconnectsFreesItsSlot()
    {
        var before = await _server.MetricsAsync();
        using var cancel = new CancellationTokenSource();
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("""{"messages":[{"role":"user","content":"And God said"}],"max_tokens":200,"temperature":0,"stream":true}""",
                Encoding.UTF8, "application/json"),
        };
        // A client that does not drain the rest of the response: disposing it closes the connection.
        using var client = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = _server.BaseAddress };
        var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel.Token);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancel.Token));
        int chunks = 0;
        while (chunks < 3 && await reader.ReadLineAsync(cancel.Token) is string line)
        {
            if (line.StartsWith("data: ", StringComparison.Ordinal)) chunks++;
        }
        Assert.That(_server.Server.RequestsInFlight, Is.EqualTo(1), "still generating");
        await cancel.CancelAsync();
        response.Dispose(); // closes the connection mid-stream
        await _server.WaitIdleAsync(TimeSpan.FromSeconds(5));
        var after = await _server.MetricsAsync();
        Assert.That(Delta(before, after, "emoe_requests_total{endpoint=\"chat\",outcome=\"cancelled\"}"), Is.EqualTo(1),
            string.Join(", ", after.Where(kv => kv.Key.StartsWith("emoe_requests_total", StringComparison.Ordinal)).Select(kv => $"{kv.Key}={kv.Value - before.GetValueOrDefault(kv.Key)}")));
        Assert.That(after["emoe_requests_running"], Is.Zero);
        Assert.That(after["emoe_kv_cache_usage_ratio"], Is.Zero);
    }

    private static double Delta(Dictionary<string, double> before, Dictionary<string, double> after, string name) =>
        after.GetValueOrDefault(name) - before.GetValueOrDefault(name);

    [Test]
    public async Task MetricsAddUp()
    {
        var before = await _server.MetricsAsync();
        int prompt = 0, completion = 0;
        for (int i = 0; i < 3; i++)
        {
            var a = await _server.PostJsonAsync("/v1/completions", $$"""{"prompt":"And God said {{i}}","max_tokens":{{2 + i}},"temperature":0}""");
            prompt += a.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
            completion += a.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        }
        var chat = await _server.PostJsonAsync("/v1/chat/completions",
            """{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"temperature":0,"task":"bible","slo":{"ttft_ms":60000}}""");
        prompt += chat.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();
        completion += chat.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        using (var bad = await _server.PostAsync("/v1/chat/completions", """{"messages":[]}""")) Assert.That((int)bad.StatusCode, Is.EqualTo(400));
        var after = await _server.MetricsAsync();

        double finished = Delta(before, after, "emoe_requests_total{endpoint=\"completions\",outcome=\"length\"}")
            + Delta(before, after, "emoe_requests_total{endpoint=\"completions\",outcome=\"stop\"}");
        Assert.That(finished, Is.EqualTo(3));
        Assert.That(Delta(before, after, "emoe_requests_total{endpoint=\"chat\",outcome=\"length\"}")
            + Delta(before, after, "emoe_requests_total{endpoint=\"chat\",outcome=\"stop\"}"), Is.EqualTo(1));
        Assert.That(Delta(before, after, "emoe_requests_total{endpoint=\"chat\",outcome=\"error\"}"), Is.EqualTo(1));
        Assert.That(Delta(before, after, "emoe_prompt_tokens_total"), Is.EqualTo(prompt));
        Assert.That(Delta(before, after, "emoe_generation_tokens_total"), Is.EqualTo(completion));
        Assert.That(Delta(before, after, "emoe_time_to_first_token_seconds_count"), Is.EqualTo(4));
        Assert.That(Delta(before, after, "emoe_time_per_output_token_seconds_count"), Is.EqualTo(4), "every request made 2 tokens or more");
        Assert.That(Delta(before, after, "emoe_slo_requests_total{task=\"bible\"}"), Is.EqualTo(1));
        Assert.That(after["emoe_slo_attainment_ratio{task=\"bible\"}"], Is.EqualTo(1), "a minute to the first token is met");
        Assert.That(Delta(before, after, "emoe_engine_sampled_tokens_total"), Is.GreaterThanOrEqualTo(completion));
        foreach (string name in new[]
                 {
                     "emoe_requests_running", "emoe_requests_waiting", "emoe_expert_cache_hits_total", "emoe_expert_cache_misses_total",
                     "emoe_expert_bytes_copied_total", "emoe_kv_cache_usage_ratio", "emoe_time_to_first_token_seconds_sum",
                 })
        {
            Assert.That(after, Does.ContainKey(name));
        }
        Assert.That(after["emoe_requests_running"], Is.Zero);
        Assert.That(after["emoe_model_loaded"], Is.EqualTo(1));
    }
}
