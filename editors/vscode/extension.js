// The sedsl extension: highlighting comes from the TextMate grammar (package.json); everything
// else from the language server, `sedsl lsp`, which this starts over stdio for .se files.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function serverOptions() {
  const command = vscode.workspace.getConfiguration("sedsl").get("server.path") || "sedsl";
  return { command, args: ["lsp"], transport: TransportKind.stdio };
}

async function activate(context) {
  client = new LanguageClient("sedsl", "sedsl language server", serverOptions(), {
    documentSelector: [
      { scheme: "file", language: "sedsl" },
      { scheme: "untitled", language: "sedsl" },
    ],
    // sends workspace/didChangeConfiguration with the `sedsl` section when it changes; the
    // server also asks for it (workspace/configuration) when it starts
    synchronize: { configurationSection: "sedsl" },
  });
  context.subscriptions.push(
    vscode.commands.registerCommand("sedsl.restartServer", () => client.restart()),
  );
  await client.start();
}

async function deactivate() {
  if (client) {
    await client.stop();
  }
}

module.exports = { activate, deactivate };
