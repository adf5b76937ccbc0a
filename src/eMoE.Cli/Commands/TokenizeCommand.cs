using System.CommandLine;
using eMoE.Model;

namespace eMoE.Cli.Commands;

/// <summary><c>emoe tokenize</c>: token ids of a text, space-separated on one line.</summary>
internal static class TokenizeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var text = new Option<string>("--text") { Description = "Text to tokenize", Required = true };
        var addSpecial = new Option<bool>("--add-special") { Description = "Add the special tokens the tokenizer's configuration adds (e.g. BOS)" };
        var command = new Command("tokenize", "Print the token ids of a text") { model, text, addSpecial };
        command.SetAction(parse =>
        {
            var tokenizer = MoeTokenizer.Load(CommonOptions.ResolveModel(parse.GetValue(model)));
            var ids = tokenizer.Encode(parse.GetValue(text)!, parse.GetValue(addSpecial));
            Console.Out.WriteLine(string.Join(' ', ids));
            return 0;
        });
        return command;
    }
}
