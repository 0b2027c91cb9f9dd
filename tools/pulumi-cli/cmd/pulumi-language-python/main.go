// Command pulumi-language-python is the Python language host that amdfleet builds beside
// the Pulumi CLI when the CLI is built from its Go modules.
//
// Upstream's language host is a Go module of its own
// (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) that the Go module
// proxy does not serve, so `go build` cannot produce it. This host does the part of its job
// that `pulumi preview/up/refresh/destroy` need, with upstream's own pieces: the engine
// starts it with the engine's address, it prints the port of its LanguageRuntime gRPC
// server, and Run starts upstream's `pulumi-language-python-exec` shim (installed next to
// this binary, from the pinned sdk/v3 module) with the project's virtualenv python, chosen
// by sdk/v3's python/toolchain package from Pulumi.yaml's runtime options. Stack config
// reaches the program as upstream passes it (PULUMI_CONFIG and PULUMI_CONFIG_SECRET_KEYS).
//
// `pulumi package gen-sdk --language python` works too: GeneratePackage (generate.go) runs
// upstream's SDK generator. Not implemented (they answer Unimplemented, which the engine
// tolerates): installing dependencies (`pulumi install`), `pulumi new` templates and
// prompts, program code generation and packing. GetRequiredPackages reports none: an amdfleet program uses only dynamic
// providers, whose plugin (pulumi-resource-pulumi-python) is installed beside this host.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/version"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

const (
	execShim = "pulumi-language-python-exec"
	// The exec shim exits with this code after it has shown the user an actionable error.
	bailExitCode = 32
)

func main() {
	flag.String("tracing", "", "accepted for compatibility; tracing is not supported")
	flag.String("root", "", "accepted for compatibility; the engine sends the root with each request")
	flag.Parse()

	shim, err := findShim()
	if err != nil {
		cmdutil.Exit(err)
	}
	host := &languageHost{shim: shim}
	if flag.NArg() > 0 {
		host.engineAddress = flag.Arg(0)
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, host)
			return nil
		},
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start the language host's gRPC server: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("the language host's gRPC server stopped: %w", err))
	}
}

// findShim returns the exec shim installed next to this executable.
func findShim() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("cannot locate this executable: %w", err)
	}
	shim := filepath.Join(filepath.Dir(self), execShim)
	if _, err := os.Stat(shim); err != nil {
		return "", fmt.Errorf("missing %s next to %s: reinstall with scripts/install-pulumi", execShim, self)
	}
	return shim, nil
}

type languageHost struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	shim          string
	engineAddress string
}

// Handshake keeps nothing: the engine's address came on the command line and every
// request carries the program's directories.
func (h *languageHost) Handshake(
	context.Context, *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *languageHost) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version.Version}, nil
}

func (h *languageHost) GetRequiredPlugins(
	context.Context, *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *languageHost) GetRequiredPackages(
	context.Context, *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

// Run executes the program through the exec shim with the project's python and waits.
func (h *languageHost) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	env, err := configEnv(req)
	if err != nil {
		return nil, err
	}
	// Not tied to ctx: the program ends by itself when the engine closes its monitor.
	cmd, err := tc.Command(context.Background(), append([]string{"-u", h.shim}, h.shimArgs(req)...)...)
	if err != nil {
		return nil, err
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Dir = req.GetPwd()
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return runResult(cmd.Run()), nil
}

func (h *languageHost) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{Executable: info.PythonExecutable, Version: info.PythonVersion.String()}, nil
}

func (h *languageHost) GetProgramDependencies(
	ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	packages, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	deps := make([]*pulumirpc.DependencyInfo, 0, len(packages))
	for _, p := range packages {
		deps = append(deps, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}

// shimArgs are the exec shim's flags, as its argparse declares them, then the program.
func (h *languageHost) shimArgs(req *pulumirpc.RunRequest) []string {
	var args []string
	add := func(flag, value string) {
		if value != "" {
			args = append(args, "--"+flag, value)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engineAddress)
	add("project", req.GetProject())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", fmt.Sprint(req.GetDryRun()))
	add("parallel", fmt.Sprint(req.GetParallel()))
	add("organization", req.GetOrganization())
	add("root_directory", req.GetInfo().GetRootDirectory())
	program := req.GetInfo().GetEntryPoint()
	if program == "" {
		program = "."
	}
	args = append(args, program)
	return append(args, req.GetArgs()...)
}

// resolveToolchain picks pip, uv or poetry and the virtualenv from Pulumi.yaml's
// runtime options, relative to the project root.
func resolveToolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	if info == nil {
		return nil, errors.New("the engine sent no program info; use a Pulumi CLI of the same version")
	}
	opts := toolchain.PythonOptions{
		Root:       info.GetRootDirectory(),
		ProgramDir: info.GetProgramDirectory(),
		Toolchain:  toolchain.Pip,
	}
	options := info.GetOptions().AsMap()
	if venv, ok := options["virtualenv"].(string); ok {
		opts.Virtualenv = venv
	}
	switch name, _ := options["toolchain"].(string); name {
	case "", "pip":
	case "uv":
		opts.Toolchain = toolchain.Uv
	case "poetry":
		opts.Toolchain = toolchain.Poetry
	default:
		return nil, fmt.Errorf("runtime option toolchain=%q is not one of pip, uv, poetry", name)
	}
	return toolchain.ResolveToolchain(opts)
}

// configEnv passes the stack config as the Python SDK reads it (a JSON object, never null:
// the SDK iterates over it).
func configEnv(req *pulumirpc.RunRequest) ([]string, error) {
	values := req.GetConfig()
	if values == nil {
		values = map[string]string{}
	}
	config, err := json.Marshal(values)
	if err != nil {
		return nil, fmt.Errorf("serializing the stack config: %w", err)
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	keys, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, fmt.Errorf("serializing the secret config keys: %w", err)
	}
	return []string{"PULUMI_CONFIG=" + string(config), "PULUMI_CONFIG_SECRET_KEYS=" + string(keys)}, nil
}

func runResult(err error) *pulumirpc.RunResponse {
	if err == nil {
		return &pulumirpc.RunResponse{}
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run the Python program: %v", err)}
	}
	if exit.ExitCode() == bailExitCode {
		return &pulumirpc.RunResponse{Bail: true}
	}
	return &pulumirpc.RunResponse{Error: fmt.Sprintf("the Python program exited with code %d", exit.ExitCode())}
}
