//! `micro completion <shell>`: the shell's completion script for `micro`, on stdout.

use std::io::Write;

use clap_complete::Shell;

use crate::tool::ToolError;

/// Flags of `micro completion`.
#[derive(Debug, clap::Args)]
pub(crate) struct CompletionArgs {
    /// The shell to complete in
    #[arg(value_enum)]
    shell: Shell,
}

/// How to load the script, for `--help`.
pub(crate) const LONG_ABOUT: &str = "\
Prints the completion script of `micro` for a shell on stdout. To load it:

  bash        source <(micro completion bash)   (or save it in
              ~/.local/share/bash-completion/completions/micro)
  zsh         micro completion zsh > \"${fpath[1]}/_micro\"
  fish        micro completion fish > ~/.config/fish/completions/micro.fish
  elvish      eval (micro completion elvish | slurp)
  powershell  micro completion powershell | Out-String | Invoke-Expression";

/// `micro completion`: writes the script for `command` (the whole CLI).
pub(crate) fn run(args: &CompletionArgs, mut command: clap::Command) -> Result<(), ToolError> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "micro", &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .map_err(|err| ToolError::Failed(format!("cannot write the script: {err}")))
}
