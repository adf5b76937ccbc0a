return await eMoE.Cli.EmoeCli.RunAsync(args);
