using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using eMoE.Inference;
using eMoE.Scheduling;
using NUnit.Framework;

namespace eMoE.Tests.Server;

/// <summary>API key, the bounded queue (429), 503 while loading, and graceful shutdown, in process and by SIGTERM to `emoe serve`.</summary>
[NonParallelizable]
public sealed class ServerLimitsTests
{
    private const string LongChat = """{"messages":[{"role":"user","content":"And God said"}],"max_tokens":200,"temperature":0,"stream":true}""";

    private static async Task<JsonElement> ErrorOf(HttpResponseMessage response, int status)
    {
        string body = await response.Content.ReadAsStringAsync();
        Assert.That((int)response.StatusCode, Is.EqualTo(status), body);
        var error = JsonDocument.Parse(body).RootElement.GetProperty("error");
        foreach (string field in new[] { "message", "type", "param", "code" }) Assert.That(error.TryGetProperty(field, out _), field);
        return error;
    }

    [Test]
    public async Task TheApiKeyIsRequiredOnV1ButNotOnHealthOrMetrics()
    {
        await using var server = await TestServer.StartAsync(o => o with { ApiKey = "secret" });
        const string body = """{"prompt":"And God said","max_tokens":2}""";
        using (var missing = await server.PostAsync("/v1/completions", body))
        {
            var error = await ErrorOf(missing, 401);
            Assert.That(error.GetProperty("message").GetString(), Does.Contain("Missing API key"));
            Assert.That(missing.Headers.WwwAuthenticate.ToString(), Is.EqualTo("Bearer"));
        }
        using (var wrong = await server.PostAsync("/v1/completions", body, apiKey: "secreT"))
            Assert.That((await ErrorOf(wrong, 401)).GetProperty("code").GetString(), Is.EqualTo("invalid_api_key"));
        using (var prefix = await server.PostAsync("/v1/completions", body, apiKey: "secret-and-more")) await ErrorOf(prefix, 401);
        using (var models = await server.Http.GetAsync("/v1/models")) await ErrorOf(models, 401);
        using (var right = await server.PostAsync("/v1/completions", body, apiKey: "secret")) Assert.That((int)right.StatusCode, Is.EqualTo(200));
        using (var health = await server.Http.GetAsync("/health")) Assert.That((int)health.StatusCode, Is.EqualTo(200));
        using (var metrics = await server.Http.GetAsync("/metrics")) Assert.That((int)metrics.StatusCode, Is.EqualTo(200));
    }

    [Test]
    public async Task BeyondTheWaitingQueueRequestsGet429WithRetryAfter()
    {
        await using var server = await TestServer.StartAsync(o => o with
        {
            MaxWaiting = 1,
            RetryAfterSeconds = 2,
            Model = o.Model with { Engine = new EngineOptions { MaxBatch = 1 } },
        });
        using var client = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = server.BaseAddress };
        var held = new List<(HttpResponseMessage Response, StreamReader Reader)>();
        for (int i = 0; i < 2; i++)
        {
            // One running, one waiting: both hold their streams open.
            var response = await client.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent(LongChat, Encoding.UTF8, "application/json"),
            }, HttpCompletionOption.ResponseHeadersRead);
            Assert.That((int)response.StatusCode, Is.EqualTo(200));
            held.Add((response, new StreamReader(await response.Content.ReadAsStreamAsync())));
        }
        Assert.That(server.Server.RequestsInFlight, Is.EqualTo(2));
        using (var rejected = await server.PostAsync("/v1/completions", """{"prompt":"x","max_tokens":2}"""))
        {
            var error = await ErrorOf(rejected, 429);
            Assert.That(error.GetProperty("code").GetString(), Is.EqualTo("rate_limit_exceeded"));
            Assert.That(rejected.Headers.RetryAfter?.Delta, Is.EqualTo(TimeSpan.FromSeconds(2)));
        }
        var metrics = await server.MetricsAsync();
        Assert.That(metrics["emoe_requests_total{endpoint=\"completions\",outcome=\"rejected\"}"], Is.EqualTo(1));
        foreach (var (response, reader) in held)
        {
            reader.Dispose();
            response.Dispose();
        }
        await server.WaitIdleAsync();
        using var admitted = await server.PostAsync("/v1/completions", """{"prompt":"x","max_tokens":2}""");
        Assert.That((int)admitted.StatusCode, Is.EqualTo(200), "the freed slots admit again");
    }

    [Test]
    public async Task HealthAnswers503WhileTheModelLoadsThen200()
    {
        using var gate = new ManualResetEventSlim();
        await using var server = await TestServer.StartAsync(o => o with
        {
            LoadModel = cancel =>
            {
                gate.Wait(cancel);
                return MoeModel.Load(o.ModelDirectory, o.Model);
            },
        }, waitForModel: false);
        using (var loading = await server.Http.GetAsync("/health"))
        {
            Assert.That((int)loading.StatusCode, Is.EqualTo(503));
            Assert.That(await loading.Content.ReadAsStringAsync(), Is.EqualTo("""{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"""));
        }
        using (var chat = await server.PostAsync("/v1/chat/completions", """{"messages":[{"role":"user","content":"hi"}]}"""))
            Assert.That((await ErrorOf(chat, 503)).GetProperty("message").GetString(), Is.EqualTo("Loading model"));
        using (var models = await server.Http.GetAsync("/v1/models")) await ErrorOf(models, 503);
        using (var metrics = await server.Http.GetAsync("/metrics"))
        {
            Assert.That((int)metrics.StatusCode, Is.EqualTo(200));
            Assert.That(await metrics.Content.ReadAsStringAsync(), Does.Contain("emoe_model_loaded 0"));
        }
        gate.Set();
        await server.Server.ModelLoaded.WaitAsync(TimeSpan.FromSeconds(60));
        using var ready = await server.Http.GetAsync("/health");
        Assert.That((int)ready.StatusCode, Is.EqualTo(200));
    }

    [Test]
    public async Task StoppingFinishesOrCancelsRunningRequestsWithinTheDeadline()
    {
        var server = await TestServer.StartAsync(o => o with { ShutdownTimeout = TimeSpan.FromMilliseconds(300) });
        var response = await server.Http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(LongChat.Replace("200", "230", StringComparison.Ordinal), Encoding.UTF8, "application/json"),
        }, HttpCompletionOption.ResponseHeadersRead);
        Assert.That((int)response.StatusCode, Is.EqualTo(200));
        var reading = TestServer.ReadEventsAsync(response);
        await Task.Delay(50);
        var clock = Stopwatch.StartNew();
        await server.DisposeAsync();
        Assert.That(clock.Elapsed, Is.LessThan(TimeSpan.FromSeconds(5)), "the deadline is 300 ms");
        var (events, done) = await reading.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(done, $"the stream ends cleanly, with [DONE]: {events.Count} events, the last {(events.Count > 0 ? events[^1].ToString() : "")}, stopped in {clock.Elapsed}");
        var last = events[^1];
        bool finished = last.TryGetProperty("choices", out var choices) && choices[0].GetProperty("finish_reason").ValueKind == JsonValueKind.String;
        bool cancelled = last.TryGetProperty("error", out var error) && error.GetProperty("message").GetString()!.Contains("shut down", StringComparison.Ordinal);
        Assert.That(finished || cancelled, last.ToString());
        response.Dispose();
    }

    [Test]
    public async Task SigtermStopsEmoeServeGracefullyWithExitCode0()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) Assert.Ignore("SIGTERM is POSIX");
        string cli = Path.Combine(TestContext.CurrentContext.TestDirectory, "eMoE.Cli.dll");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string arg in new[] { cli, "serve", "--model", RepoPaths.ShippedModel, "--device", "cpu", "--port", "0", "--shutdown-timeout", "20" })
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        try
        {
            Uri? address = null;
            var stderr = new StringBuilder();
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            while (address is null && await process.StandardError.ReadLineAsync(wait.Token) is string line)
            {
                stderr.AppendLine(line);
                if (line.StartsWith("emoe: listening on ", StringComparison.Ordinal)) address = new Uri(line.Split(' ')[3]);
            }
            Assert.That(address, Is.Not.Null, stderr.ToString());
            var drain = process.StandardError.ReadToEndAsync(CancellationToken.None);
            using var http = new HttpClient { BaseAddress = address };
            while ((await http.GetAsync("/health", wait.Token)).StatusCode != HttpStatusCode.OK) await Task.Delay(50, wait.Token);

            var response = await http.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent(LongChat, Encoding.UTF8, "application/json"),
            }, HttpCompletionOption.ResponseHeadersRead, wait.Token);
            Assert.That((int)response.StatusCode, Is.EqualTo(200));
            var reading = TestServer.ReadEventsAsync(response);
            using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])) await kill.WaitForExitAsync(wait.Token);
            var (events, done) = await reading.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.That(done, "the running request finishes within the deadline");
            Assert.That(events[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString(), Is.AnyOf("stop", "length"));
            await process.WaitForExitAsync(wait.Token);
            Assert.That(process.ExitCode, Is.Zero, await drain);
            response.Dispose();
        }
        finally
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
        }
    }
}
