# Windows build of the one-folder app (PowerShell). A sketch that mirrors build.sh; it has not
# been run on Windows by the team yet (see docs/packaging.md, "Windows").
#
#   powershell -ExecutionPolicy Bypass -File packaging\build.ps1            CPU torch
#   $env:TORCH_SPEC="torch==2.13.0"; $env:TORCH_INDEX_URL="https://download.pytorch.org/whl/cu128"
#   powershell -ExecutionPolicy Bypass -File packaging\build.ps1 -Clean     CUDA torch
param([switch]$Clean)
$ErrorActionPreference = "Stop"
$Repo = Split-Path -Parent $PSScriptRoot
$Venv = Join-Path $Repo "build\venv-pack"
$TorchSpec = if ($env:TORCH_SPEC) { $env:TORCH_SPEC } else { "torch==2.13.0" }
$App = Join-Path $Repo "dist\usgen-desktop"

if ($Clean) { Remove-Item -Recurse -Force -ErrorAction SilentlyContinue $Venv, (Join-Path $Repo "build\pyinstaller"), $App }
if (-not (Test-Path "$Venv\Scripts\python.exe")) { py -3.11 -m venv $Venv }
$Py = "$Venv\Scripts\python.exe"

# torch first, as chosen (CPU from PyPI, CUDA from the PyTorch index)
if ($env:TORCH_INDEX_URL) { & $Py -m pip install $TorchSpec --extra-index-url $env:TORCH_INDEX_URL }
else { & $Py -m pip install $TorchSpec }
# keep the chosen torch: drop constraints.txt's CPU pin when another torch was asked for
$Constraints = Join-Path $Repo "constraints.txt"
if ($TorchSpec -ne "torch==2.13.0") {
  $Constraints = Join-Path $Repo "build\constraints-pack.txt"
  Get-Content (Join-Path $Repo "constraints.txt") | Where-Object { $_ -notmatch '^\s*torch[=<>! ]' } | Set-Content $Constraints
}
& $Py -m pip install -c $Constraints $Repo "pyinstaller>=6"

$env:USGEN_REPO = $Repo
Push-Location $Repo
& $Py -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build\pyinstaller packaging\usgen-desktop.spec
Pop-Location

# Licences next to the exe. The spec adds usgen.exe (console) beside the windowed
# usgen-desktop.exe: `usgen.exe selftest --gui` is the self-test with output on Windows.
& $Py -c "import sys; sys.path.insert(0, r'$Repo'); from usgen_desktop.licenses import write_licenses_file; write_licenses_file(r'$App\LICENSES.txt')"
& "$App\usgen.exe" selftest --gui
if ($LASTEXITCODE -ne 0) { throw "self-test of the built app failed" }
Write-Host "Built $App"
Write-Host "Zip the folder, or wrap it with Inno Setup / WiX for a Start-menu entry."
