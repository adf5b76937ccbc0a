using System.CommandLine;
using eMoE.Compute;
using eMoE.Model;

namespace eMoE.Cli;

/// <summary>A user-facing error: printed as one line, exit code 1.</summary>
internal sealed class CliException(string message) : Exception(message);

/// <summary>Runs a parsed command line, turning failures into one-line messages on stderr.</summary>
internal static class CliErrors
{
    public static async Task<int> RunAsync(ParseResult parse, bool verbose)
    {
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
        };
        if (parse.Errors.Count > 0)
        {
            // One line and a hint, not the whole help: the help is one --help away.
            string command = string.Join(' ', parse.CommandResult.Command.Name == "emoe" ? ["emoe"] : new[] { "emoe", parse.CommandResult.Command.Name });
            var error = parse.Errors.FirstOrDefault(e => !e.Message.StartsWith("Required command", StringComparison.Ordinal)) ?? parse.Errors[0];
            Console.Error.WriteLine($"emoe: error: {error.Message}");
            Console.Error.WriteLine($"Try '{command} --help'.");
            return 1;
        }
        try
        {
            var configuration = new InvocationConfiguration { EnableDefaultExceptionHandler = false };
            // The server stops itself on SIGTERM (its own deadline, exit code 0), not System.CommandLine's 2 s.
            if (parse.CommandResult.Command.Name == "serve") configuration.ProcessTerminationTimeout = null;
            return await parse.InvokeAsync(configuration, cancel.Token);
        }
        catch (Exception e) when (e is CliException or ModelFormatException or DeviceNotFoundException or ArgumentException
                                      or IOException or UnauthorizedAccessException or OperationCanceledException)
        {
            Console.Error.WriteLine($"emoe: error: {e.Message}");
            if (verbose) Console.Error.WriteLine(e);
            return e is OperationCanceledException ? 130 : 1;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"emoe: internal error: {e.GetType().Name}: {e.Message}");
            if (verbose) Console.Error.WriteLine(e);
            return 2;
        }
    }
}
