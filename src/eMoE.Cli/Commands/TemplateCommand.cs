using System.CommandLine;
using System.Text.Json;
using eMoE.Model;

namespace eMoE.Cli.Commands;

/// <summary>
/// <c>emoe template</c>: the prompt a model's chat template makes of a conversation, printed exactly
/// (no newline added). The directory needs only tokenizer_config.json (no config.json or weights).
/// </summary>
internal static class TemplateCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var messages = new Option<FileInfo>("--messages")
        {
            Description = "JSON file: an array of message objects ({\"role\", \"content\", ...}), or {\"messages\": [...]} whose other keys " +
                "(tools, enable_thinking...) are template variables",
            Required = true,
        };
        var noGenerationPrompt = new Option<bool>("--no-generation-prompt")
        {
            Description = "Do not end with the opening of an assistant turn (add_generation_prompt=false)",
        };
        var command = new Command("template", "Print the prompt the model's chat template makes of a conversation (the plain fallback when the model has none)")
        {
            model, messages, noGenerationPrompt,
        };
        command.SetAction(parse =>
        {
            string directory = CommonOptions.ResolveModel(parse.GetValue(model));
            var (conversation, variables) = ReadMessages(parse.GetValue(messages)!);
            ChatTemplate template;
            try
            {
                template = ChatTemplate.ForModel(directory);
            }
            catch (TemplateSyntaxException e)
            {
                throw new CliException($"{directory}: the chat template is not valid Jinja: {e.Message}");
            }
            if (template.IsFallback) Console.Error.WriteLine($"emoe: {directory} has no chat template; using the plain fallback");
            string prompt;
            try
            {
                prompt = template.RenderJson(conversation, new ChatTemplateOptions
                {
                    AddGenerationPrompt = !parse.GetValue(noGenerationPrompt),
                    Variables = variables,
                });
            }
            catch (TemplateRaisedException e)
            {
                throw new CliException($"the chat template refused the conversation: {e.Message}");
            }
            catch (ChatTemplateException e)
            {
                throw new CliException($"the chat template failed: {e.Message}");
            }
            Console.Out.Write(prompt);
            Console.Out.Flush();
            return 0;
        });
        return command;
    }

    /// <summary>The messages of the file, checked to be objects with a string role, and its other top-level keys.</summary>
    private static (JsonElement Messages, Dictionary<string, object?> Variables) ReadMessages(FileInfo file)
    {
        if (!file.Exists) throw new CliException($"{file.FullName}: not found");
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file.FullName));
            root = doc.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new CliException($"{file.FullName}: not JSON: {e.Message}");
        }

        var variables = new Dictionary<string, object?>();
        JsonElement messages = root;
        if (root.ValueKind == JsonValueKind.Object)
        {
            if (!root.TryGetProperty("messages", out messages))
                throw new CliException($"{file.FullName}: an object needs \"messages\": [...]");
            foreach (var property in root.EnumerateObject().Where(p => p.Name != "messages")) variables[property.Name] = property.Value;
        }
        if (messages.ValueKind != JsonValueKind.Array)
            throw new CliException($"{file.FullName}: expected an array of messages or {{\"messages\": [...]}}, got {Describe(messages)}");
        int index = 0;
        foreach (var message in messages.EnumerateArray())
        {
            index++;
            if (message.ValueKind != JsonValueKind.Object)
                throw new CliException($"{file.FullName}: message {index} is {Describe(message)}, not an object");
            if (!message.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String)
                throw new CliException($"{file.FullName}: message {index} has no \"role\" string");
        }
        return (messages, variables);
    }

    private static string Describe(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };
}
